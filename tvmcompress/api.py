"""The public Python API. Everything the CLI does goes through here.

    import tvmcompress
    artifact = tvmcompress.compile("model.onnx", "aarch64", output="out/")
    outputs = tvmcompress.load("out/").run({"input": x})
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import time
from typing import Any

from . import pipeline
from .artifact import Artifact, load
from .artifact_files import (
    LIBRARY_NAME,
    MANIFEST_NAME,
    RELAX_MODULE_NAME,
    REPORT_HTML_NAME,
    REPORT_JSON_NAME,
    WEIGHTS_NAME,
    ArtifactWriter,
    check_output_dir_writable,
    save_relax_module,
    write_json,
)
from .config import Budgets, CompileOptions
from .data import calibration_calls
from .data import eval_data as read_eval_data
from .errors import TvmcompressError
from .frontend import load_model
from .inspection import analyze, frontend_stats, inspect
from .manifest import build_manifest
from .pipeline import Data
from .recipe import recipe_of
from .source import ModelSource, open_source, read_paths
from .targets import presets, toolchain
from .targets.listing import list_targets

log = logging.getLogger(__name__)

__all__ = ["analyze", "compile", "frontend_stats", "inspect", "list_targets", "load", "load_model"]


def compile(  # noqa: A001 - the verb users expect; shadows the builtin only inside this module
    model: ModelSource,
    target: str = "host",
    *,
    output: str | os.PathLike,
    options: CompileOptions | None = None,
    cache_dir: str | os.PathLike | None = None,
    budgets: Budgets | None = None,
    example_inputs: tuple | None = None,
) -> Artifact:
    """Compile an ONNX model into an artifact directory: ``model.so``, ``manifest.json``, ``report.html``.

    The build is written beside ``output`` and renamed into place at the end: after a failure nothing is at
    ``output``, and an existing directory is only replaced when tvmcompress wrote it.

    Parameters
    ----------
    model : str, os.PathLike, bytes, onnx.ModelProto, or a PyTorch model
        The ONNX model: a path, its serialized bytes, or a model in memory. Or a PyTorch model (needs the
        ``torch`` extra; tvmcompress/torch_import.py): an ``nn.Module`` with ``example_inputs``, a
        ``torch.export.ExportedProgram``, or the path of a ``.pt2`` saved with ``torch.export.save``; it is
        verified against its own outputs.
    target : str
        A preset name (``"host"``, ``"aarch64"``, ``"cortex-m7"``, ...; see :func:`list_targets`) or a TVM target
        as JSON. Default ``"host"``, this machine.
    output : str or os.PathLike
        The artifact directory to write (keyword only).
    options : CompileOptions, optional
        Shapes, quantization, pruning, tuning, weight compression and verification settings; build one with
        ``CompileOptions.create(...)``. Default: a float32 build with default schedules, verified against ONNX
        Runtime.
    cache_dir : str or os.PathLike, optional
        Reuse (and fill) a content-hash cache of artifacts there (``tvmcompress.cache.default_cache_dir()`` is the
        XDG default); ``artifact.cache_hit`` says whether it was used.
    budgets : Budgets, optional
        RAM and flash limits (``Budgets(max_ram_bytes=..., max_flash_bytes=...)``): a build over them fails and
        leaves nothing at ``output``.
    example_inputs : tuple, optional
        For an ``nn.Module``: tensors of the shapes to compile for.

    Returns
    -------
    Artifact
        The artifact just written (or taken from the cache).

    Raises
    ------
    TvmcompressError
        Bad input (unreadable model, unknown target, inconsistent options, calibration data that does not fit the
        model), a build over ``budgets``, or a build that fails verification (wrong outputs, SQNR below
        ``options.min_sqnr``). The message says what to change.

    Examples
    --------
    >>> options = tvmcompress.CompileOptions.create(input_shapes={"x": (1, 3, 224, 224)})
    >>> artifact = tvmcompress.compile("model.onnx", "aarch64", output="out/", options=options)
    >>> artifact.manifest["sizes"]["library_bytes"] > 0
    True
    """
    options = options or CompileOptions()
    output = os.fspath(output)
    from . import torch_import  # imports torch only for a torch model

    is_torch = torch_import.is_torch_model(model)
    if is_torch and cache_dir is not None and not isinstance(model, (str, os.PathLike)):
        log.info("not using the cache: an in-memory torch model has no stable bytes to key it by")
        cache_dir = None
    elif not is_torch and example_inputs is not None:
        raise TvmcompressError("example_inputs are for a PyTorch nn.Module; an ONNX model has its own input shapes")

    def source() -> Any:
        return torch_import.load_program(model, example_inputs) if is_torch else model

    if cache_dir is None:
        return _compile_fresh(source(), target, output, options, budgets)
    from .cache import ArtifactCache, lookup

    # NOTE: the key and a hit import neither TVM nor ONNX's checker: a hit must take well under a second.
    key, artifact = lookup(cache_dir, model, target, options, output, budgets)
    if artifact is not None:
        return artifact
    artifact = _compile_fresh(source(), target, output, options, budgets)
    if key is not None:  # None: an unreadable input, which _compile_fresh has reported
        ArtifactCache(cache_dir).store(key, artifact.directory)
    return artifact


def _compile_fresh(
    model: ModelSource, target: str, output: str, options: CompileOptions, budgets: Budgets | None
) -> Artifact:
    from .verify import BelowQualityFloor

    try:
        return _compile_once(model, target, output, options, budgets)
    except BelowQualityFloor as below:
        # NOTE: static int8 under --min-sqnr: its most sensitive layers return to float and it is built once
        # more; that build must meet the floor or fail (no second fallback).
        log.warning("%s: returning %s to float and rebuilding", below, ", ".join(below.layers))
        assert options.quantize is not None  # BelowQualityFloor comes from static int8 builds only
        config = dataclasses.replace(options.quantize, exclude=options.quantize.exclude + below.layers)
        return _compile_once(model, target, output, dataclasses.replace(options, quantize=config), budgets,
                             fallback=below.record)


def _compile_once(
    model: Any, target: str, output: str, options: CompileOptions, budgets: Budgets | None,
    fallback: dict | None = None,
) -> Artifact:
    from .footprint import check_budgets, check_runtime_fits, runtime_bytes

    start = time.perf_counter()
    # Cheap checks first: a missing toolchain or unwritable OUT should fail before a minutes-long build.
    preset = presets.with_cores(presets.resolve_preset(target), options.cores)
    toolchain.find_compiler(preset)
    paths_read = read_paths(model, options)  # OUT must not hold them: replacing it would delete them
    check_output_dir_writable(output, paths_read)
    runtime_size = runtime_bytes(preset.arch, str(preset.tvm_target.get("kind")))
    check_runtime_fits(budgets, runtime_size, preset.arch)

    source = open_source(model, options)
    inputs = source.inputs
    # The calibration and eval data are read and checked once, here, before the import, so that bad data fails
    # in a second rather than after the model is imported; the steps that use them read the cached result.
    data = Data(functools.cache(lambda: calibration_calls(options.calibration, inputs)),
                functools.cache(lambda: read_eval_data(options.eval_data, inputs)), inputs)
    data.calibration()
    data.evaluation()
    mod = source.import_to_relax()
    mod, steps = pipeline.compress(mod, options, preset, data)

    from .build import build_library  # local: imports tvm's compiler stack
    from .memory_plan import DynamicShapeError, record_memory_plan
    from .memory_timeline import timeline_of
    from .report import write_report

    with ArtifactWriter(output, paths_read) as writer:
        library = writer.path(LIBRARY_NAME)
        tuning_dir = writer.path("tuning") if options.tune is not None else None
        # Saved before the build: `export --static` rebuilds exactly this module as a system library.
        save_relax_module(mod, writer.path(RELAX_MODULE_NAME))
        with record_memory_plan() as recorder:
            result = build_library(mod, preset, library, options.tune, tuning_dir, options.separate_weights,
                                   options.winograd)
        if result.weights is not None:
            from .weights_file import write as write_weights

            write_weights(writer.path(WEIGHTS_NAME), result.weights, "tvcw" if options.compress_weights else "raw")
        try:
            memory_plan = recorder.plan()
        except DynamicShapeError as err:
            log.warning("no peak activation memory: %s (dynamic shapes; fix them with --input-shape)", err)
            memory_plan = None
        manifest = build_manifest(
            directory=writer.tmpdir, model_name=source.name, source_bytes=source.source_bytes,
            source_model=source.onnx_model, preset=preset, io=(source.inputs, source.outputs), options=options,
            steps=steps, mod=mod, result=result, runtime_size=runtime_size, memory_plan=memory_plan,
            recipe=recipe_of(target, options) if source.torch_program is None else None,
            frontend_steps=source.frontend_steps)
        manifest["build_seconds"] = round(time.perf_counter() - start, 3)
        source.record_io(manifest, mod)
        # What lives when in the activation arena, for the report's chart (memory_timeline.py).
        manifest["memory_timeline"] = timeline_of(recorder.planned) if memory_plan is not None else None
        # Inside the writer: a build over budget leaves nothing at OUT.
        check_budgets(budgets, manifest)
        write_json(writer.path(MANIFEST_NAME), manifest)
        # Inside the writer: a wrong build leaves nothing at OUT. Artifact reads the manifest just written.
        manifest["verification"] = {**manifest["verification"], **source.verify(
            Artifact(writer.tmpdir), options, steps, data.calibration, fallback)}
        write_json(writer.path(MANIFEST_NAME), manifest)
        write_report(writer.path(REPORT_JSON_NAME), writer.path(REPORT_HTML_NAME), manifest, source.stats())
    log.info("wrote %s in %.1f s", output, time.perf_counter() - start)
    return Artifact(output)
