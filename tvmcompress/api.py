"""The public Python API. Everything the CLI does goes through here.

    import tvmcompress
    artifact = tvmcompress.compile("model.onnx", "aarch64", output="out/")
    outputs = tvmcompress.load("out/").run({"input": x})
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import os
import time
from dataclasses import asdict
from typing import Any

import onnx

from . import __version__, frontend, sub_byte_io
from .artifact import (
    LIBRARY_NAME,
    MANIFEST_NAME,
    RELAX_MODULE_NAME,
    WEIGHTS_NAME,
    REPORT_HTML_NAME,
    REPORT_JSON_NAME,
    SCHEMA_VERSION,
    Artifact,
    ArtifactWriter,
    check_output_dir_writable,
    sha256_file,
    write_json,
)
from .config import Budgets, CompileOptions
from .errors import TvmcompressError
from .targets import presets, toolchain

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


def _versions() -> dict[str, str]:
    import tvm
    import tvm_ffi

    return {"tvmcompress": __version__, "tvm": tvm.__version__, "tvm-ffi": tvm_ffi.__version__}


def _verify_foreign_library(path: str, preset: presets.TargetPreset) -> dict[str, Any]:
    """What readelf says of model.so, and whether it is the architecture the target asked for."""
    header = toolchain.readelf_header(path)
    machine = header.get("Machine", "")
    if machine != preset.elf_machine:
        raise RuntimeError(f"linked {path} for {preset.name} but readelf says Machine '{machine}'")
    return {"class": header.get("Class"), "machine": machine, "flags": header.get("Flags")}


def compile(  # noqa: A001 - the verb users expect; shadows the builtin only inside this module
    model: ModelSource,
    target: str = "host",
    *,
    output: str | os.PathLike,
    options: CompileOptions | None = None,
    cache_dir: str | os.PathLike | None = None,
    budgets: Budgets | None = None,
) -> Artifact:
    """Compile an ONNX model into an artifact directory: ``model.so``, ``manifest.json``, ``report.html``.

    The build is written beside ``output`` and renamed into place at the end: after a failure nothing is at
    ``output``, and an existing directory is only replaced when tvmcompress wrote it.

    Parameters
    ----------
    model : str, os.PathLike, bytes or onnx.ModelProto
        The ONNX model: a path, its serialized bytes, or a model in memory.
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
    if cache_dir is None:
        return _compile_fresh(model, target, output, options, budgets)
    from .cache import ArtifactCache, lookup

    # NOTE: the key and a hit import neither TVM nor ONNX's checker: a hit must take well under a second.
    key, artifact = lookup(cache_dir, model, target, options, output, budgets)
    if artifact is not None:
        return artifact
    artifact = _compile_fresh(model, target, output, options, budgets)
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
        config = dataclasses.replace(options.quantize, exclude=options.quantize.exclude + below.layers)
        return _compile_once(model, target, output, dataclasses.replace(options, quantize=config), budgets,
                             fallback=below.record)


def _compile_once(
    model: ModelSource, target: str, output: str, options: CompileOptions, budgets: Budgets | None,
    fallback: dict | None = None,
) -> Artifact:
    from .footprint import check_budgets, check_runtime_fits, flash_bytes, isa_features, runtime_bytes

    start = time.perf_counter()
    # Cheap checks first: a missing toolchain or unwritable OUT should fail before a minutes-long build.
    preset = presets.with_cores(presets.resolve_preset(target), options.cores)
    toolchain.find_compiler(preset)
    from .cache import files_read

    read_paths = files_read(model, options)  # OUT must not hold them: replacing it would delete them
    check_output_dir_writable(output, read_paths)
    runtime_size = runtime_bytes(preset.arch, str(preset.tvm_target.get("kind")))
    check_runtime_fits(budgets, runtime_size, preset.arch)

    source_model = frontend.load_model(model)
    source_bytes = _source_bytes(model, source_model)
    canonical = frontend.canonicalize(source_model, dict(options.input_shapes), dict(options.const_inputs))
    frontend.check_supported(canonical)
    if not options.allow_nonfinite_weights:
        frontend.check_finite_weights(canonical)
    inputs, outputs = frontend.model_io(canonical)
    # The calibration .npz is read and checked once, when the first step that uses it asks for it: here,
    # before the import, so that bad data fails in a second rather than after the model is imported.
    calibration = functools.cache(lambda: _calibration_batches(options.calibration, inputs))
    calibration()
    if options.eval_data:
        _eval_data(options.eval_data, inputs)  # the same early check; its steps read it again
    log.info("importing %d-node graph into Relax", len(canonical.graph.node))
    mod = frontend.import_to_relax(canonical)
    # NOTE: pruning before quantization: channel removal and reconstruction work on float weights, and
    # calibration then measures the ranges of the pruned model.
    from . import weight_compression

    mod = weight_compression.fold_affine(mod, options)  # NOTE: before pruning: magnitudes as the layer scales them
    mod, pruning = _prune(mod, options, inputs, calibration)
    pruned = mod
    mod, clustering = weight_compression.cluster(
        mod, options, calibration() if options.cluster_bits is not None else None
    )
    before_quantization = mod  # what verification's int8 fallback re-quantizes
    mod, quantization = _quantize(mod, options, preset, inputs, calibration)
    quantized = mod if quantization is not None else None
    mod, sparse_layers = weight_compression.sparse_kernels(mod, options, preset)

    from .build import build_library  # local: imports tvm's compiler stack
    from .memory_plan import DynamicShapeError, record_memory_plan
    from .memory_timeline import timeline_of
    from .relax_stats import constant_bytes
    from .report import write_report

    with ArtifactWriter(output, read_paths) as writer:
        library = writer.path(LIBRARY_NAME)
        tuning_dir = writer.path("tuning") if options.tune is not None else None
        # Saved before the build: `export --static` rebuilds exactly this module as a system library.
        _save_relax_module(mod, writer.path(RELAX_MODULE_NAME))
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
        verification = {"runner": preset.runner}
        if preset.runner != "native":
            verification["elf"] = _verify_foreign_library(library, preset)
        frontend_options = {k: v for k, v in options.to_json().items() if k in ("input_shapes", "const_inputs")}
        passes = [
            {"name": "frontend.canonicalize", "options": frontend_options},
            {"name": "frontend.import_to_relax", "options": {}},
        ]
        if weight_compression.fold_affine_applies(options):  # runs before pruning
            passes.append({"name": "tvmcompress.FoldChannelAffine", "options": {}})
        if pruning is not None:
            passes.append({"name": "tvmcompress.prune", "options": pruning["config"]})
        if clustering is not None:
            passes.append({"name": "tvmcompress.ClusterWeights", "options": {"bits": options.cluster_bits}})
        if sparse_layers and any(d["sparse"] for d in sparse_layers):
            passes.append({"name": "tvmcompress.SparseDense",
                           "options": {"layers": [d["layer"] for d in sparse_layers if d["sparse"]]}})
        if quantization is not None and "smoothquant" in quantization:  # on the float module, before quantize
            smoothing = quantization["smoothquant"]
            passes.append({"name": "tvmcompress.SmoothQuant",
                           "options": {"alpha": smoothing["alpha"], "smoothed_layers": smoothing["smoothed_layers"]}})
        if quantization is not None:
            passes.append(
                {"name": "tvmcompress.fold_prequantized", "options": {}} if "config" not in quantization
                else {"name": "tvmcompress.quantize", "options": quantization["config"]}
            )
        if result.tuning is not None:
            passes.append({"name": "tvmcompress.tune", "options": asdict(options.tune)})
        passes.append({"name": result.pipeline, "options": {"winograd": options.winograd}})
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "versions": _versions(),
            "model_name": _model_name(model),
            "separate_weights": options.separate_weights,
            "target": {
                "preset": preset.name,
                "json": presets.full_target_json(preset),
                "arch": preset.arch,
                "runner": preset.runner,
                "requires": sorted(preset.requires),
                "isa_features": isa_features(preset.tvm_target),
            },
            # A sub-byte input or output (int4, ...) also records the dtype that model.so takes for it.
            "inputs": [_io_entry(s) for s in inputs],
            "outputs": [_io_entry(s) for s in outputs],
            "passes": passes,
            "sizes": {
                "source_model_bytes": len(source_bytes),
                "weights_bytes": constant_bytes(mod),
                # As the kernels read them: packed, Winograd-transformed (null for CUDA builds).
                "built_weights_bytes": result.built_weights_bytes,
                "library_bytes": os.path.getsize(library),
                "runtime_bytes": runtime_size,
            },
            "memory": memory_plan.to_json() if memory_plan is not None else None,
            # What lives when in the activation arena, for the report's chart (memory_timeline.py).
            "memory_timeline": timeline_of(recorder.planned) if memory_plan is not None else None,
            "hashes": {
                "source_model": hashlib.sha256(source_bytes).hexdigest(),
                "inputs": {
                    **({"calibration": sha256_file(options.calibration)} if options.calibration else {}),
                    **({"eval_data": sha256_file(options.eval_data)} if options.eval_data else {}),
                },
                LIBRARY_NAME: sha256_file(library),
                # Checked with model.so's on every load (Artifact.verify_files): a damaged weights file or
                # Relax module is refused in one line before anything reads it.
                **{name: sha256_file(writer.path(name)) for name in (WEIGHTS_NAME, RELAX_MODULE_NAME)
                   if os.path.isfile(writer.path(name))},
            },
            "verification": verification,
            "build_seconds": round(time.perf_counter() - start, 3),
        }
        if pruning is not None:
            manifest["pruning"] = pruning
        if clustering is not None:
            manifest["clustering"] = clustering
        if sparse_layers is not None:
            manifest["sparse_layers"] = sparse_layers
        if options.cluster_bits is not None or options.compress_weights:
            from .weight_sizes import weights_breakdown

            manifest["sizes"]["weights_breakdown"] = weights_breakdown(
                source_model, pruned if pruning is not None else None, quantized, mod, options.cluster_bits,
                writer.path(WEIGHTS_NAME) if result.weights is not None else None,
            )
        if quantization is not None:
            manifest["quantization"] = quantization
        if result.tuning is not None:
            manifest["tuning"] = result.tuning
        if result.weights is not None:
            manifest["sizes"]["weights_file_bytes"] = os.path.getsize(writer.path(WEIGHTS_NAME))
        manifest["sizes"]["flash_bytes"] = flash_bytes(manifest["sizes"])
        # Inside the writer: a build over budget leaves nothing at OUT.
        check_budgets(budgets, manifest)
        write_json(writer.path(MANIFEST_NAME), manifest)
        # Inside the writer: a wrong build leaves nothing at OUT. Artifact reads the manifest just written.
        manifest["verification"] = {**verification, **_verify(
            Artifact(writer.tmpdir), source_model, canonical, options, quantization, pruning, clustering,
            calibration, before_quantization, fallback)}
        write_json(writer.path(MANIFEST_NAME), manifest)
        write_report(writer.path(REPORT_JSON_NAME), writer.path(REPORT_HTML_NAME), manifest, frontend_stats(canonical))
    log.info("wrote %s in %.1f s", output, time.perf_counter() - start)
    return Artifact(output)


def _verify(artifact, source_model, canonical, options, quantization, pruning, clustering, calibration,
            before_quantization, fallback) -> dict[str, Any]:
    """The manifest's verification section (tvmcompress/verify.py) of the build in `artifact`."""
    from .verify import layers_to_float, verify_build

    compressed = "+".join(
        ([quantization["config"]["mode"] if "config" in quantization else "prequantized"] if quantization else [])
        + (["pruned"] if pruning is not None else []) + (["clustered"] if clustering is not None else []))
    int8 = quantization is not None and quantization.get("config", {}).get("mode") == "int8"
    fallback_layers = (lambda: layers_to_float(before_quantization, options.quantize, calibration(),
                                               options.min_sqnr)) if int8 and fallback is None else None
    record = verify_build(artifact, source_model, canonical, options, compressed or None,
                          calibration() if options.calibration else None, fallback_layers)
    return {**record, "quality_floor_fallback": fallback} if fallback is not None else record


def _io_entry(spec: frontend.TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "shape": list(spec.shape), "dtype": spec.dtype, **sub_byte_io.manifest_entry(spec.dtype)}


def _model_name(model: ModelSource) -> str | None:
    """The model file's name without extension (the default C name of `tvmcompress export`), if it has one."""
    if isinstance(model, (str, os.PathLike)):
        return os.path.splitext(os.path.basename(os.fspath(model)))[0]
    return None


def _save_relax_module(mod, path: str) -> None:
    import tvm

    with open(path, "w", encoding="utf-8") as f:
        f.write(tvm.ir.save_json(mod))


def _calibration_batches(path: str | None, inputs) -> list | None:
    """The calibration .npz at `path`, checked against the model's inputs, as a list of model calls; None
    without one."""
    if not path:
        return None
    from .data import iterate_batches, load_npz, validate_inputs, validate_values

    arrays = load_npz(path)
    validate_inputs(arrays, inputs, source=f"calibration file {path}")
    validate_values(arrays, inputs, source=f"calibration file {path}")
    return list(iterate_batches(arrays, inputs))


def _prune(mod, options: CompileOptions, inputs, read_calibration) -> tuple[Any, dict | None]:
    """Apply --prune (tvmcompress.pruning); the calibration .npz (`read_calibration()`), when given, feeds the
    activation criterion, layer ranking and reconstruction."""
    if options.prune is None:
        return mod, None
    from .pruning import prune

    calibration = read_calibration()
    if options.prune_budget is not None:  # per-group ratios from measured sensitivity (prune_budget.py)
        from .prune_budget import prune_within_budget

        return prune_within_budget(mod, options.prune, calibration, _eval_data(options.eval_data, inputs),
                                   options.prune_budget)
    return prune(mod, options.prune, calibration)


def _quantize(
    mod, options: CompileOptions, preset: presets.TargetPreset, inputs, read_calibration
) -> tuple[Any, dict | None]:
    """Apply --quantize: calibrate on the .npz (static int8), with the activation type the target's int8 dot
    product takes (x86 vpdpbusd multiplies uint8 by int8; ARM sdot int8 by int8).

    A pre-quantized model (QDQ or QOperator, e.g. from onnxruntime's quantize_static) keeps its own quantization:
    its Q/DQ are folded into integer kernels whether or not --quantize is given, and --quantize is an error."""
    from .passes.quantize import fold_prequantized, is_prequantized

    if is_prequantized(mod):
        if options.quantize is not None:
            raise TvmcompressError(
                "the model is already quantized (QuantizeLinear/DequantizeLinear or QLinear* ops): drop --quantize "
                f"{options.quantize.mode}; its own quantization is compiled to integer kernels"
            )
        return fold_prequantized(mod)
    if options.quantize is None:
        return mod, None
    import tvm

    from .passes.quantize import quantize
    from .schedules.int8_rules import dot_intrin_for

    config = options.quantize
    if config.mode in ("int8", "dynamic-int8"):
        x86 = str(preset.tvm_target.get("mtriple", "x86_64")).startswith("x86_64")
        config = dataclasses.replace(config, activation_dtype="uint8" if x86 else "int8")
        is_llvm = preset.tvm_target.get("kind") == "llvm"
        intrin = dot_intrin_for(tvm.target.Target(preset.tvm_target)) if is_llvm else None
        if intrin is not None and intrin.int16_pairs and config.mode == "int8":
            # AVX2's vpmaddubsw saturates byte-pair sums to int16: 7-bit weights never do (int8_intrinsics.py).
            config = dataclasses.replace(config, weight_bits=7)
        if is_llvm and intrin is None:
            log.warning(
                "target %s has no fast int8 dot product (AVX2, AVX512-VNNI, or ARM dotprod): int8 layers will "
                "run on widening multiplies and may not beat float32; consider %s",
                preset.name, "x86-64-avx512" if x86 else "aarch64-dotprod",
            )
    if config.mode in ("int8", "dynamic-int8") and preset.tvm_target.get("kind") == "llvm":
        # NOTE: what the CPU pipeline does to float graphs, done before quantizing. Its ConvertLayout cannot see
        # through quantize/dequantize, so converting the int8 graph left transposes around every quantize and
        # ran pooling in NCHW (2.3 of ResNet-18's 18.7 ms int8 kernel time, profiled); and BatchNorm folded into
        # the weights leaves one add in the requantize epilogue instead of subtract, divide, multiply, add.
        # channels_last also turns the importer's Clip (ReLU6) into maximum/minimum: as call_tir it ran in NCHW
        # between two transposes, in float, and HoistQuantize could not move the next layer's quantize through it
        # (0.7 of MobileNetV2's 5.2 ms int8 kernel time, profiled).
        from .passes.fold_channel_affine import FoldChannelAffine
        from .passes.quantize import prepare_for_quantization
        from .schedules.cpu_pipeline import channels_last

        mod = channels_last(FoldChannelAffine()(prepare_for_quantization(mod)))
    calibration = read_calibration()
    smoothing = None
    if config.smoothquant is not None:
        # NOTE: on the float module, before int8 calibration: calibration then measures the smoothed ranges.
        from .passes.smooth_quant import smooth_quant

        mod, smoothing = smooth_quant(mod, calibration, config.smoothquant, config.exclude)
    if options.eval_data and config.mode == "int8":
        quantized, record = _quantize_with_eval_data(mod, config, calibration, options, inputs)
    else:
        quantized, record = quantize(mod, config, calibration)
    if smoothing is not None:
        record["smoothquant"] = smoothing
    return quantized, record


def _eval_data(path: str, inputs):
    """The eval .npz as quant_analysis.EvalData (model calls + optional labels)."""
    from .data import LABEL_KEY, iterate_batches, load_npz, validate_inputs, validate_values
    from .quant_analysis import EvalData

    arrays = load_npz(path)
    validate_inputs(arrays, inputs, source=f"eval data file {path}")
    validate_values(arrays, inputs, source=f"eval data file {path}")
    labels = arrays.pop(LABEL_KEY, None)
    return EvalData(tuple(iterate_batches(arrays, inputs)), labels)


def _quantize_with_eval_data(mod, config, calibration, options: CompileOptions, inputs):
    """int8 with --eval-data: the fp32 and int8 metric go into the record (and report.json). With
    --accuracy-budget, layers return to float, most sensitive first, until the eval metric is within budget; the
    per-layer analysis that ranks them (one build per layer) runs only when the fallback is needed."""
    from .quant_analysis import measure_quantized, quantize_within_budget

    data = _eval_data(options.eval_data, inputs)
    if options.accuracy_budget is not None:
        return quantize_within_budget(mod, config, calibration, data, options.accuracy_budget)
    from .passes.quantize import quantize

    quantized, record = quantize(mod, config, calibration)
    record["eval"] = measure_quantized(mod, quantized, data)
    return quantized, record


def analyze(
    model: ModelSource,
    calibration: str | os.PathLike,
    eval_data: str | os.PathLike | None = None,
    config: "QuantizeConfig | None" = None,
    input_shapes: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """int8 sensitivity of each conv/matmul (tvmcompress/quant_analysis.py): output SQNR against fp32 and the
    eval metric with only that layer quantized; eval data defaults to the calibration data."""
    from .passes.quantize import is_prequantized
    from .passes.quantize_config import QuantizeConfig
    from .quant_analysis import analyze_layers

    canonical = frontend.canonicalize(frontend.load_model(model), input_shapes or {})
    frontend.check_supported(canonical)
    inputs, _ = frontend.model_io(canonical)
    batches = _calibration_batches(os.fspath(calibration), inputs)
    data = _eval_data(os.fspath(eval_data), inputs) if eval_data is not None else None
    mod = frontend.import_to_relax(canonical)
    if is_prequantized(mod):
        raise TvmcompressError("the model is already quantized: analyze its float version")
    return analyze_layers(mod, config or QuantizeConfig(), batches, data)


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
    """The target presets :func:`compile` accepts by name.

    Returns
    -------
    list of dict
        One per preset: ``name``, ``description``, ``tvm_target`` (the TVM target as a dict), ``compiler`` and its
        ``debian_package``, and ``runner`` (how artifacts for it run on this machine: native, qemu or none).

    Examples
    --------
    >>> [t["name"] for t in tvmcompress.list_targets()][:2]
    ['host', 'x86-64']
    """
    return [
        {
            "name": p.name,
            "description": p.description,
            "tvm_target": p.tvm_target,
            "compiler": p.toolchain.compiler,
            "debian_package": p.toolchain.debian_package,
            "runner": p.runner,
        }
        for p in presets.list_presets()
    ]
