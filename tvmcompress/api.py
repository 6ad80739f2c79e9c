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

import onnx

from . import frontend, pipeline
from .artifact import Artifact
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
from .data import Samples, as_samples, calibration_calls
from .data import eval_data as read_eval_data
from .errors import TvmcompressError
from .manifest import build_manifest, io_entry
from .passes.quantize_config import QuantizeConfig
from .pipeline import Data
from .recipe import recipe_of
from .targets import presets, toolchain
from .verify import verify_compressed

log = logging.getLogger(__name__)

ModelSource = str | os.PathLike | onnx.ModelProto | bytes


def load_model(source: ModelSource) -> onnx.ModelProto:
    """Read and check an ONNX model.

    Parameters
    ----------
    source : str, os.PathLike, bytes or onnx.ModelProto
        A path to an ``.onnx`` file, its serialized bytes, or a model already in memory.

    Returns
    -------
    onnx.ModelProto
        The model, checked by ONNX's checker (external data loaded from beside the file).

    Raises
    ------
    TvmcompressError
        The file is missing or unreadable, or it is not a valid ONNX model.

    Examples
    --------
    >>> model = tvmcompress.load_model("examples/digits_cnn.onnx")
    >>> [i.name for i in model.graph.input]
    ['input']
    """
    return frontend.load_model(source)


def load(directory: str | os.PathLike) -> Artifact:
    """Open a compiled artifact directory for running or exporting.

    The manifest's structure and the SHA-256 of ``model.so``, ``weights.bin`` and ``relax_module.json`` are checked
    before anything is loaded.

    Parameters
    ----------
    directory : str or os.PathLike
        The ``output`` of :func:`compile` (``-o`` of ``tvmcompress compile``).

    Returns
    -------
    Artifact
        ``.run({input name: array})`` returns ``{output name: array}``; ``.manifest`` is the build record.

    Raises
    ------
    TvmcompressError
        Not an artifact, a damaged or modified file, or an artifact of another schema version.

    Examples
    --------
    >>> artifact = tvmcompress.load("out/")
    >>> outputs = artifact.run({"input": np.zeros((1, 1, 8, 8), "float32")})
    """
    return Artifact(os.fspath(directory))


def _source_bytes(source: ModelSource, model: onnx.ModelProto) -> bytes:
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as f:
            return f.read()
    if isinstance(source, bytes):
        return source
    return model.SerializeToString(deterministic=True)


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
    model: ModelSource, target: str, output: str, options: CompileOptions, budgets: Budgets | None,
    fallback: dict | None = None,
) -> Artifact:
    from .cache import files_read
    from .footprint import check_budgets, check_runtime_fits, runtime_bytes

    start = time.perf_counter()
    # Cheap checks first: a missing toolchain or unwritable OUT should fail before a minutes-long build.
    preset = presets.with_cores(presets.resolve_preset(target), options.cores)
    toolchain.find_compiler(preset)
    from .torch_import import TorchProgram

    torch_program = model if isinstance(model, TorchProgram) else None
    # OUT must not hold them: replacing it would delete them
    read_paths = files_read(torch_program.path if torch_program is not None else model, options)
    check_output_dir_writable(output, read_paths)
    runtime_size = runtime_bytes(preset.arch, str(preset.tvm_target.get("kind")))
    check_runtime_fits(budgets, runtime_size, preset.arch)

    dynamic = None
    if torch_program is not None:
        from .torch_import import check_options

        check_options(options)
        source_model = canonical = None
        source_bytes = torch_program.source_bytes
        inputs, outputs = list(torch_program.inputs), list(torch_program.outputs)
    else:
        source_model = frontend.load_model(model)
        source_bytes = _source_bytes(model, source_model)
        if options.dims:  # dynamic shapes: symbolic dims within ranges (tvmcompress/dynamic_shapes.py)
            from .dynamic_shapes import DynamicBuild

            dynamic = DynamicBuild(options)
            dynamic.check_model(source_model)
        canonical = frontend.canonicalize(source_model, dict(options.input_shapes), dict(options.const_inputs))
        frontend.check_supported(canonical)
        if not options.allow_nonfinite_weights:
            frontend.check_finite_weights(canonical)
        inputs, outputs = frontend.model_io(canonical)
    # The calibration and eval data are read and checked once, here, before the import, so that bad data fails
    # in a second rather than after the model is imported; the steps that use them read the cached result.
    data = Data(functools.cache(lambda: calibration_calls(options.calibration, inputs)),
                functools.cache(lambda: read_eval_data(options.eval_data, inputs)), inputs)
    data.calibration()
    data.evaluation()
    if torch_program is not None:
        from .torch_import import import_to_relax

        mod = import_to_relax(torch_program)
    else:
        log.info("importing %d-node graph into Relax", len(canonical.graph.node))
        mod = frontend.import_to_relax(canonical, dynamic.variables if dynamic else None)
        if dynamic is not None:
            mod = dynamic.annotate(mod)
    mod, steps = pipeline.compress(mod, options, preset, data)

    from .build import build_library  # local: imports tvm's compiler stack
    from .memory_plan import DynamicShapeError, record_memory_plan
    from .memory_timeline import timeline_of
    from .report import write_report

    with ArtifactWriter(output, read_paths) as writer:
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
            directory=writer.tmpdir, model_name=_model_name(model), source_bytes=source_bytes,
            source_model=source_model, preset=preset, io=(inputs, outputs), options=options, steps=steps, mod=mod,
            result=result, runtime_size=runtime_size, memory_plan=memory_plan,
            recipe=recipe_of(target, options) if torch_program is None else None,
            frontend_steps=None if torch_program is None else ["torch_import.import_to_relax"])
        manifest["build_seconds"] = round(time.perf_counter() - start, 3)
        if dynamic is not None:  # symbolic dims and their ranges (tvmcompress/dynamic_shapes.py)
            manifest["inputs"] = dynamic.input_entries(inputs, io_entry)
            manifest["outputs"] = dynamic.output_entries(outputs, io_entry, mod)
            manifest["dynamic_dims"] = dynamic.manifest_dims()
        # What lives when in the activation arena, for the report's chart (memory_timeline.py).
        manifest["memory_timeline"] = timeline_of(recorder.planned) if memory_plan is not None else None
        # Inside the writer: a build over budget leaves nothing at OUT.
        check_budgets(budgets, manifest)
        write_json(writer.path(MANIFEST_NAME), manifest)
        # Inside the writer: a wrong build leaves nothing at OUT. Artifact reads the manifest just written.
        manifest["verification"] = {**manifest["verification"], **(dynamic.verify(
            Artifact(writer.tmpdir), source_model, canonical, options) if dynamic is not None else verify_compressed(
            Artifact(writer.tmpdir), source_model, canonical, options, steps, data.calibration, fallback,
            torch_program))}
        write_json(writer.path(MANIFEST_NAME), manifest)
        stats = frontend_stats(canonical) if torch_program is None else _torch_stats(torch_program)
        write_report(writer.path(REPORT_JSON_NAME), writer.path(REPORT_HTML_NAME), manifest, stats)
    log.info("wrote %s in %.1f s", output, time.perf_counter() - start)
    return Artifact(output)


def _model_name(model: ModelSource) -> str | None:
    """The model file's name without extension (the default C name of `tvmcompress export`), if it has one."""
    from .torch_import import TorchProgram

    if isinstance(model, TorchProgram):
        return model.name
    if isinstance(model, (str, os.PathLike)):
        return os.path.splitext(os.path.basename(os.fspath(model)))[0]
    return None


def analyze(
    model: ModelSource,
    calibration: str | os.PathLike | Samples,
    eval_data: str | os.PathLike | Samples | None = None,
    config: QuantizeConfig | None = None,
    input_shapes: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """int8 sensitivity of each conv/matmul (passes/quant_analysis.py): output SQNR against fp32 and the
    eval metric with only that layer quantized; eval data defaults to the calibration data."""
    from .passes.quant_analysis import analyze_layers
    from .passes.quantize import is_prequantized

    canonical = frontend.canonicalize(frontend.load_model(model), input_shapes or {})
    frontend.check_supported(canonical)
    inputs, _ = frontend.model_io(canonical)
    batches = calibration_calls(as_samples(calibration), inputs)
    data = read_eval_data(as_samples(eval_data), inputs)
    mod = frontend.import_to_relax(canonical)
    if is_prequantized(mod):
        raise TvmcompressError("the model is already quantized: analyze its float version")
    return analyze_layers(mod, config or QuantizeConfig(), batches, data)


def _torch_stats(torch_program) -> dict[str, Any]:
    from .torch_import import model_stats

    return model_stats(torch_program)


def frontend_stats(model: onnx.ModelProto) -> dict[str, Any]:
    from .model_stats import model_stats

    return model_stats(model)


def inspect(model: ModelSource, input_shapes: dict[str, Any] | None = None) -> dict[str, Any]:
    """Describe an ONNX model without compiling it.

    Parameters
    ----------
    model : str, os.PathLike, bytes or onnx.ModelProto
        The ONNX model.
    input_shapes : dict, optional
        ``{input name: shape}`` fixing dynamic dims first, so that MACs can be counted; a model whose shapes cannot
        be fixed is described as loaded.

    Returns
    -------
    dict
        ``op_histogram``, ``inputs``/``outputs`` (name, shape, dtype), ``parameters`` (count, bytes), ``macs``
        (total, per layer, per layer type), ``unsupported_ops``, ``opsets``.

    Raises
    ------
    TvmcompressError
        The model cannot be read.

    Examples
    --------
    >>> stats = tvmcompress.inspect("examples/digits_cnn.onnx")
    >>> stats["macs"]["total"]
    84224
    """
    source_model = frontend.load_model(model)
    try:
        canonical = frontend.canonicalize(source_model, input_shapes or {})
    except TvmcompressError:
        # Inspection should still describe a model whose shapes are not fixed yet: report it as loaded.
        canonical = source_model
    return frontend_stats(canonical)


def list_targets() -> list[dict[str, Any]]:
    """The targets :func:`compile` accepts by name, then the microcontroller boards of ``export --aot --board``.

    Returns
    -------
    list of dict
        One per preset: ``name``, ``description``, ``tvm_target`` (the TVM target as a dict), ``compiler`` and its
        ``debian_package``, ``runner`` (how artifacts for it run on this machine: native, qemu or none),
        ``features`` and ``kind`` (``compile`` or ``board``).

    Examples
    --------
    >>> [t["name"] for t in tvmcompress.list_targets()][:2]
    ['host', 'x86-64']
    """
    from .targets.mcu_boards import BOARDS

    def features(target: dict[str, Any]) -> list[str]:
        cpu = [str(target["mcpu"])] if "mcpu" in target else []
        return cpu + [str(f).lstrip("+") for f in target.get("mattr", [])]

    compile_targets = [
        {
            "name": p.name,
            "description": p.description,
            "tvm_target": p.tvm_target,
            "compiler": p.toolchain.compiler,
            "debian_package": p.toolchain.debian_package,
            "runner": p.runner,
            "features": features(p.tvm_target),
            "kind": "compile",
        }
        for p in presets.list_presets()
    ]
    boards = [
        {
            "name": b.name,
            "description": b.description,
            "tvm_target": b.tvm_target,
            "compiler": "arm-none-eabi-gcc",
            "debian_package": "gcc-arm-none-eabi libnewlib-arm-none-eabi",
            "runner": f"qemu-system-arm -M {b.qemu_machine}",
            "features": list(b.features),
            "kind": "board",
            "gcc_flags": list(b.gcc_flags),
        }
        for b in BOARDS.values()
    ]
    return compile_targets + boards
