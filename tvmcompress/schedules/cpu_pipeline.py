"""cpu_pipeline: the default (untuned) Relax pipeline for LLVM CPU targets.

Usage: `tvm.compile(mod, target, relax_pipeline=cpu_pipeline(target))` where mod is a Relax module
with weights bound as constants. Deterministic: the same module and target give the same output.
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.backend.cpu_generic import pipeline as cpu_generic
from tvm.s_tir import dlight

from .cpu_rules import default_rules
from .cpu_rules.packed_compute import LEGALIZE_MAP
from .cpu_rules.restore_clip import RestoreScalarMinMax


def host_target(num_cores: int | None = None) -> tvm.target.Target:
    """An LLVM target for this machine's CPU (an mcpu the host lacks would crash with SIGILL)."""
    config = {"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu()}
    if num_cores:
        config["num-cores"] = num_cores
    return tvm.target.Target(config)


def cpu_schedule_passes(target: tvm.target.Target) -> list[tvm.transform.Pass]:
    """The steps up to and including scheduling: after them every PrimFunc carries a schedule.

    Run them under `with target:` (the packed legalization reads the SIMD width from it).
    """
    return [
        # BN and friends become elementwise ops on constants, which FoldConstant shrinks and
        # FuseOps later fuses into the conv epilogue.
        relax.transform.DecomposeOpsForInference(),
        relax.transform.CanonicalizeBindings(),
        relax.transform.FoldConstant(),
        # NOTE: before ConvertLayout, which cannot see into the importer's call_tir Clip.
        RestoreScalarMinMax(),
        # NHWC: channels innermost, so conv, depthwise conv, pooling and the fused
        # epilogues all vectorize over channels. Weight permutes fold into constants.
        relax.transform.ConvertLayout({"relax.nn.conv2d": ["NHWC", "OHWI"]}),
        relax.transform.FoldConstant(),
        *cpu_generic.library_dispatch_passes(target),
        # erf (GELU), exp (softmax), tanh, sigmoid -> vectorizable polynomial versions; libm calls
        # would be scalar. Costs ~1e-6 relative error.
        relax.transform.FastMathTransform(),
        # NOTE: conv2d/matmul with constant weights legalize to computes on weights packed
        # with numpy here, so the artifact carries packed weights.
        relax.transform.LegalizeOps(customize_legalize_map=LEGALIZE_MAP),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FoldConstant(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
        relax.transform.DeadCodeElimination(),
        dlight.ApplyDefaultSchedule(*default_rules()),
    ]


def cpu_pipeline(target: tvm.target.Target) -> tvm.transform.Pass:
    """The Relax -> VM-ready pipeline with tvmcompress's default CPU schedules."""

    @tvm.transform.module_pass(opt_level=0, name="tvmcompress.cpu_pipeline")
    def _pipeline(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        with target:
            passes = [
                *cpu_schedule_passes(target),
                *cpu_generic.dataflow_lower_passes(target),
                *cpu_generic.finalize_passes(target),
            ]
            return tvm.transform.Sequential(passes)(mod)

    return _pipeline
