"""Relax IRModule -> compiled library on disk, for one target preset.

This is the only module that calls `tvm.compile` and `export_library`: TVM's build API moves between releases,
so it moves here only.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import tvm
from tvm import relax

from .targets.presets import TargetPreset
from .targets.toolchain import make_fcompile

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildResult:
    library_path: str
    seconds: float
    pipeline: str  # which relax pipeline scheduled the TIR


def relax_pipeline_for(target: tvm.target.Target) -> tuple[object, str]:
    """The relax pipeline that lowers and schedules a module for `target`, and its name for the manifest.

    CPU targets get our default schedule rules (TVM's own CPU pipeline leaves TIR unscheduled, which runs
    ~100x slower than ONNX Runtime). CUDA gets TVM's default pipeline, which applies dlight's GPU rules.
    """
    if target.kind.name == "llvm":
        from .schedules.cpu_pipeline import cpu_pipeline

        return cpu_pipeline(target), "tvmcompress.cpu_pipeline"
    return "default", f"tvm.default({target.kind.name})"


def compile_module(mod: tvm.IRModule, preset: TargetPreset) -> tuple[relax.VMExecutable, str]:
    target = tvm.target.Target(preset.tvm_target)
    pipeline, pipeline_name = relax_pipeline_for(target)
    log.info("compiling for %s with %s", preset.name, pipeline_name)
    # A failure here is our bug, not the user's input: it keeps its traceback (exit code 1).
    return tvm.compile(mod, target, relax_pipeline=pipeline), pipeline_name


def export_library(executable, preset: TargetPreset, path: str) -> None:
    """Link the executable into a shared library with the preset's (cross) compiler."""
    fcompile = make_fcompile(preset)
    if preset.tvm_target.get("kind") == "cuda":
        from .targets.cuda_build import embed_device_code

        arch = str(preset.tvm_target.get("arch"))
        executable, _ = embed_device_code(executable, arch)
    executable.export_library(path, fcompile=fcompile)


def build_library(mod: tvm.IRModule, preset: TargetPreset, path: str) -> BuildResult:
    start = time.perf_counter()
    executable, pipeline_name = compile_module(mod, preset)
    log.info("linking %s", path)
    export_library(executable, preset, path)
    return BuildResult(path, time.perf_counter() - start, pipeline_name)

