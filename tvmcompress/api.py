"""The public Python API. Everything the CLI does goes through here.

    import tvmcompress
    artifact = tvmcompress.compile("model.onnx", "aarch64", output="out/")
    outputs = tvmcompress.load("out/").run({"input": x})
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import time
from dataclasses import asdict
from typing import Any

import onnx

from . import __version__, frontend
from .artifact import (
    LIBRARY_NAME,
    MANIFEST_NAME,
    REPORT_HTML_NAME,
    REPORT_JSON_NAME,
    SCHEMA_VERSION,
    Artifact,
    ArtifactWriter,
    check_output_dir_writable,
    sha256_file,
    write_json,
)
from .config import CompileOptions
from .errors import TvmcompressError
from .targets import presets, toolchain

log = logging.getLogger(__name__)

ModelSource = str | os.PathLike | onnx.ModelProto | bytes


def load_model(source: ModelSource) -> onnx.ModelProto:
    """Read and check an ONNX model from a path, bytes or a ModelProto."""
    return frontend.load_model(source)


def load(directory: str | os.PathLike) -> Artifact:
    """Open a compiled artifact directory."""
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
) -> Artifact:
    """Compile an ONNX model into an artifact directory at `output` for `target` (a preset name or TVM JSON)."""
    options = options or CompileOptions()
    output = os.fspath(output)
    start = time.perf_counter()

    # Cheap checks first: a missing toolchain or unwritable OUT should fail before a minutes-long build.
    preset = presets.with_cores(presets.resolve_preset(target), options.cores)
    toolchain.find_compiler(preset)
    check_output_dir_writable(output)

    source_model = frontend.load_model(model)
    source_bytes = _source_bytes(model, source_model)
    canonical = frontend.canonicalize(source_model, dict(options.input_shapes), dict(options.const_inputs))
    frontend.check_supported(canonical)
    inputs, outputs = frontend.model_io(canonical)
    log.info("importing %d-node graph into Relax", len(canonical.graph.node))
    mod = frontend.import_to_relax(canonical)
    mod, quantization = _quantize(mod, options, preset, inputs)

    from .build import build_library  # local: imports tvm's compiler stack
    from .relax_stats import constant_bytes
    from .report import write_report

    with ArtifactWriter(output) as writer:
        library = writer.path(LIBRARY_NAME)
        tuning_dir = writer.path("tuning") if options.tune is not None else None
        result = build_library(mod, preset, library, options.tune, tuning_dir)
        verification = {"runner": preset.runner}
        if preset.runner != "native":
            verification["elf"] = _verify_foreign_library(library, preset)
        frontend_options = {k: v for k, v in options.to_json().items() if k in ("input_shapes", "const_inputs")}
        passes = [
            {"name": "frontend.canonicalize", "options": frontend_options},
            {"name": "frontend.import_to_relax", "options": {}},
        ]
        if quantization is not None:
            passes.append({"name": "tvmcompress.quantize", "options": quantization["config"]})
        if result.tuning is not None:
            passes.append({"name": "tvmcompress.tune", "options": asdict(options.tune)})
        passes.append({"name": result.pipeline, "options": {}})
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "versions": _versions(),
            "target": {
                "preset": preset.name,
                "json": presets.full_target_json(preset),
                "arch": preset.arch,
                "runner": preset.runner,
                "requires": sorted(preset.requires),
            },
            "inputs": [{"name": s.name, "shape": list(s.shape), "dtype": s.dtype} for s in inputs],
            "outputs": [{"name": s.name, "shape": list(s.shape), "dtype": s.dtype} for s in outputs],
            "passes": passes,
            "sizes": {
                "source_model_bytes": len(source_bytes),
                "weights_bytes": constant_bytes(mod),
                "library_bytes": os.path.getsize(library),
            },
            "hashes": {
                "source_model": hashlib.sha256(source_bytes).hexdigest(),
                "inputs": {"calibration": sha256_file(options.calibration)} if options.calibration else {},
                LIBRARY_NAME: sha256_file(library),
            },
            "verification": verification,
            "build_seconds": round(time.perf_counter() - start, 3),
        }
        if quantization is not None:
            manifest["quantization"] = quantization
        if result.tuning is not None:
            manifest["tuning"] = result.tuning
        write_json(writer.path(MANIFEST_NAME), manifest)
        write_report(writer.path(REPORT_JSON_NAME), writer.path(REPORT_HTML_NAME), manifest, frontend_stats(canonical))
    log.info("wrote %s in %.1f s", output, time.perf_counter() - start)
    return Artifact(output)


def _quantize(mod, options: CompileOptions, preset: presets.TargetPreset, inputs) -> tuple[Any, dict | None]:
    """Apply --quantize: calibrate on the .npz (static int8), with the activation type the target's int8 dot
    product takes (x86 vpdpbusd multiplies uint8 by int8; ARM sdot int8 by int8)."""
    if options.quantize is None:
        return mod, None
    import tvm

    from .passes.quantize import quantize
    from .schedules.int8_rules import dot_intrin_for

    config = options.quantize
    if config.mode in ("int8", "dynamic-int8"):
        x86 = str(preset.tvm_target.get("mtriple", "x86_64")).startswith("x86_64")
        config = dataclasses.replace(config, activation_dtype="uint8" if x86 else "int8")
        if preset.tvm_target.get("kind") == "llvm" and dot_intrin_for(tvm.target.Target(preset.tvm_target)) is None:
            log.warning(
                "target %s has no fast int8 dot product (AVX512-VNNI/AVX-VNNI, or ARM dotprod): int8 layers will "
                "run on widening multiplies and may not beat float32; consider %s",
                preset.name, "x86-64-avx512" if x86 else "aarch64-dotprod",
            )
    calibration = None
    if options.calibration:
        from .data import iterate_batches, load_npz, validate_inputs

        arrays = load_npz(options.calibration)
        validate_inputs(arrays, inputs, source=f"calibration file {options.calibration}")
        calibration = iterate_batches(arrays, inputs)
    return quantize(mod, config, calibration)


def frontend_stats(model: onnx.ModelProto) -> dict[str, Any]:
    from .model_stats import model_stats

    return model_stats(model)


def inspect(model: ModelSource, input_shapes: dict[str, Any] | None = None) -> dict[str, Any]:
    """Op histogram, inputs/outputs, parameters, MACs per layer type and unsupported ops of an ONNX model."""
    source_model = frontend.load_model(model)
    try:
        canonical = frontend.canonicalize(source_model, input_shapes or {})
    except TvmcompressError:
        # Inspection should still describe a model whose shapes are not fixed yet: report it as loaded.
        canonical = source_model
    return frontend_stats(canonical)


def list_targets() -> list[dict[str, Any]]:
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
