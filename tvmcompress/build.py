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

from .config import TuneConfig
from .errors import TvmcompressError
from .progress import stage
from .targets.presets import TargetPreset
from .targets.toolchain import make_fcompile

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildResult:
    library_path: str
    seconds: float
    pipeline: str  # which relax pipeline scheduled the TIR
    tuning: dict | None = None  # TuningSummary.to_json() when tuned
    weights: list | None = None  # separate_weights: the lifted weights (numpy), in main's parameter order
    built_weights_bytes: int | None = None  # constants as the kernels read them (CPU pipeline only)


@tvm.transform.module_pass(opt_level=0, name="tvmcompress.MeasureConstants")
class MeasureConstants:
    """Records the bytes of the constants the built module carries: the weights as its kernels read them (packed,
    Winograd-transformed, int8), which can differ from the imported model's (manifest `weights_bytes`)."""

    def __init__(self):
        self.bytes: int | None = None

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        from .relax_stats import constant_bytes

        self.bytes = constant_bytes(mod)
        return mod


def relax_pipeline_for(target: tvm.target.Target, tuned=None, winograd: bool = True) -> tuple[object, str]:
    """The relax pipeline that lowers and schedules a module for `target`, and its name for the manifest.

    CPU targets get our default schedule rules (TVM's own CPU pipeline leaves TIR unscheduled, which runs
    ~100x slower than ONNX Runtime). CUDA gets TVM's default pipeline, which applies dlight's GPU rules.
    """
    if target.kind.name == "llvm":
        from .schedules.cpu_pipeline import cpu_pipeline

        return cpu_pipeline(target, tuned, winograd), "tvmcompress.cpu_pipeline"
    return "default", f"tvm.default({target.kind.name})"


def compile_module(
    mod: tvm.IRModule, preset: TargetPreset, tuned=None, lift_weights=None, winograd: bool = True,
    measure: MeasureConstants | None = None,
) -> tuple[relax.VMExecutable, str]:
    """`lift_weights`: a tvmcompress.lift_weights.LiftWeights to run after the pipeline (--separate-weights);
    it then holds the weights that main takes as extra parameters. `winograd=False` keeps CPU convolutions direct
    (packed_compute.legalize_map). `measure` (CPU pipeline only) records the built constants' bytes."""
    target = tvm.target.Target(preset.tvm_target)
    pipeline, pipeline_name = relax_pipeline_for(target, tuned, winograd)
    if lift_weights is not None and not isinstance(pipeline, tvm.transform.Pass):
        raise TvmcompressError(f"--separate-weights supports CPU targets, not {preset.name}: drop the flag")
    if isinstance(pipeline, tvm.transform.Pass):
        after = [p for p in (measure, lift_weights) if p is not None]  # measured before LiftWeights takes them
        if after:
            pipeline = tvm.transform.Sequential([pipeline, *after])
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


def tune_module(mod: tvm.IRModule, preset: TargetPreset, config: TuneConfig, tuning_dir: str, winograd: bool = True):
    """MetaSchedule tuning of the module's tasks, as the CPU pipeline will lower them; returns the database of
    records that beat our defaults (saved to tuning_dir as well) and the tuning summary."""
    from .schedules import tuning
    from .schedules.cpu_pipeline import apply_default_schedules, cpu_lowering_passes
    from .targets.toolchain import find_compiler

    target = tvm.target.Target(preset.tvm_target)
    if target.kind.name != "llvm":
        raise TvmcompressError(f"tuning supports CPU targets for now, not {preset.name}: drop the tuning flags")
    with target:
        lowered = tvm.transform.Sequential(cpu_lowering_passes(target, winograd))(mod)
    export = tuning.cross_export(find_compiler(preset)) if preset.runner != "native" else None
    if preset.runner != "native" and config.rpc is None and config.measures:
        raise TvmcompressError(
            f"tuning for {preset.name} measures on the device: add --rpc HOST:PORT --rpc-key KEY of its RPC tracker"
        )
    summary = tuning.tune(lowered, target, config, tuning_dir, apply_default_schedules(target), export)
    winners = tuning.winning_database(config.database_dir or tuning_dir, target)
    if config.database_dir is not None:
        # The artifact keeps the records it was built with, even when they came from a shared database.
        tuning.save_records(winners, tuning_dir, config.database_dir)
    return winners, summary


def build_library(
    mod: tvm.IRModule,
    preset: TargetPreset,
    path: str,
    tune: TuneConfig | None = None,
    tuning_dir: str | None = None,
    separate_weights: bool = False,
    winograd: bool = True,
) -> BuildResult:
    start = time.perf_counter()
    tuned, summary = (None, None)
    if tune is not None:
        with stage("tune"):
            tuned, summary = tune_module(mod, preset, tune, tuning_dir, winograd)
    lift = None
    if separate_weights:
        from .lift_weights import LiftWeights

        lift = LiftWeights()
    measure = MeasureConstants()
    with stage("compile kernels"):
        executable, pipeline_name = compile_module(mod, preset, tuned, lift, winograd, measure)
    log.info("linking %s", path)
    with stage("link"):
        export_library(executable, preset, path)
    return BuildResult(
        path, time.perf_counter() - start, pipeline_name, summary.to_json() if summary else None,
        lift.lifted if lift is not None else None, measure.bytes,
    )

