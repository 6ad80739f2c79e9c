"""manifest.json, built from the steps that ran (tvmcompress/pipeline.py) and the build's result.

The `passes` list is the frontend's two steps, then one entry per pipeline Step in the order it ran, then
tuning and the schedule pipeline that build.py applied; each stage's record (pruning, clustering, quantization,
sparse_layers) comes from the step that filed it. Nothing here restates the compile order.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from . import __version__, sub_byte_io
from .artifact import LIBRARY_NAME, RELAX_MODULE_NAME, SCHEMA_VERSION, WEIGHTS_NAME, sha256_file
from .config import CompileOptions
from .frontend import TensorSpec
from .pipeline import Step, stage_output
from .targets import presets, toolchain

__all__ = ["build_manifest", "passes_ran", "elf_record"]

# The pipeline's sections, in the order the manifest has always listed them.
SECTIONS = ("pruning", "clustering", "distillation", "sparse_layers", "quantization")


def passes_ran(options: CompileOptions, steps: Sequence[Step], tuning: dict | None, pipeline: str,
               frontend_steps: Sequence[str] | None = None) -> list[dict]:
    """The manifest's `passes`: what ran, in order, each with its options. `frontend_steps`: the import's
    step names when it is not the ONNX frontend's (a PyTorch model: torch_import.py)."""
    frontend_options = {k: v for k, v in options.to_json().items() if k in ("input_shapes", "const_inputs")}
    passes = [
        {"name": "frontend.canonicalize", "options": frontend_options},
        {"name": "frontend.import_to_relax", "options": {}},
    ] if frontend_steps is None else [{"name": name, "options": {}} for name in frontend_steps]
    passes += [{"name": step.name, "options": step.options} for step in steps]
    if tuning is not None:
        passes.append({"name": "tvmcompress.tune", "options": asdict(options.tune) if options.tune else {}})
    passes.append({"name": pipeline, "options": {"winograd": options.winograd}})
    return passes


def elf_record(path: str, preset: presets.TargetPreset) -> dict[str, Any]:
    """What readelf says of model.so, and whether it is the architecture the target asked for."""
    header = toolchain.readelf_header(path)
    machine = header.get("Machine", "")
    if machine != preset.elf_machine:
        raise RuntimeError(f"linked {path} for {preset.name} but readelf says Machine '{machine}'")
    return {"class": header.get("Class"), "machine": machine, "flags": header.get("Flags")}


def _versions() -> dict[str, str]:
    import tvm
    import tvm_ffi

    return {"tvmcompress": __version__, "tvm": tvm.__version__, "tvm-ffi": tvm_ffi.__version__}


def io_entry(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "shape": list(spec.shape), "dtype": spec.dtype, **sub_byte_io.manifest_entry(spec.dtype)}


def build_manifest(
    *, directory: str, model_name: str | None, source_bytes: bytes, source_model, preset: presets.TargetPreset,
    io: tuple[Sequence[TensorSpec], Sequence[TensorSpec]], options: CompileOptions, steps: Sequence[Step], mod,
    result, runtime_size: int | None, memory_plan, recipe: dict | None = None,
    frontend_steps: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The manifest of the build whose files are in `directory` (model.so and, if any, weights.bin and the Relax
    module). `result` is build.build_library's BuildResult; build_seconds and verification are the caller's."""
    from .footprint import flash_bytes, isa_features
    from .relax_stats import constant_bytes

    def path(name: str) -> str:
        return os.path.join(directory, name)

    library = path(LIBRARY_NAME)
    verification: dict[str, Any] = {"runner": preset.runner}
    if preset.runner != "native":
        verification["elf"] = elf_record(library, preset)
    def data_hash(data: Any) -> str:  # a file's bytes, or the digest of data given in Python (data.Samples)
        return sha256_file(data) if isinstance(data, str) else data.digest
    manifest: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "versions": _versions(),
        "model_name": model_name,
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
        "inputs": [io_entry(s) for s in io[0]],
        "outputs": [io_entry(s) for s in io[1]],
        "passes": passes_ran(options, steps, result.tuning, result.pipeline, frontend_steps),
        "sizes": {
            "source_model_bytes": len(source_bytes),
            "weights_bytes": constant_bytes(mod),
            # As the kernels read them: packed, Winograd-transformed (null for CUDA builds).
            "built_weights_bytes": result.built_weights_bytes,
            "library_bytes": os.path.getsize(library),
            "runtime_bytes": runtime_size,
        },
        "memory": memory_plan.to_json() if memory_plan is not None else None,
        "hashes": {
            "source_model": hashlib.sha256(source_bytes).hexdigest(),
            "inputs": {
                **({"calibration": data_hash(options.calibration)} if options.calibration else {}),
                **({"eval_data": data_hash(options.eval_data)} if options.eval_data else {}),
                **({"train_data": data_hash(options.train_data)} if options.train_data else {}),
            },
            LIBRARY_NAME: sha256_file(library),
            # Checked with model.so's on every load (Artifact.verify_files): a damaged weights file or
            # Relax module is refused in one line before anything reads it.
            **{name: sha256_file(path(name)) for name in (WEIGHTS_NAME, RELAX_MODULE_NAME)
               if os.path.isfile(path(name))},
        },
        "verification": verification,
    }
    if recipe is not None:
        manifest["recipe"] = recipe
    for step in steps:
        if step.section is not None:
            manifest[step.section] = step.record
    if source_model is not None:
        from .merge import merge_record

        ensemble = merge_record(source_model)
        if ensemble is not None:  # a `tvmcompress merge` model: its members and what they share
            manifest["ensemble"] = ensemble
    # The breakdown starts from the ONNX initializers' bytes; a torch model reports weights_bytes only.
    if (options.cluster_bits is not None or options.compress_weights) and source_model is not None:
        from .weight_sizes import weights_breakdown

        quantized = stage_output(steps, "quantize") if manifest.get("quantization") is not None else None
        manifest["sizes"]["weights_breakdown"] = weights_breakdown(
            source_model, stage_output(steps, "prune"), quantized, mod, options.cluster_bits,
            path(WEIGHTS_NAME) if result.weights is not None else None,
        )
    if result.tuning is not None:
        manifest["tuning"] = result.tuning
    if result.weights is not None:
        manifest["sizes"]["weights_file_bytes"] = os.path.getsize(path(WEIGHTS_NAME))
    manifest["sizes"]["flash_bytes"] = flash_bytes(manifest["sizes"])
    return manifest
