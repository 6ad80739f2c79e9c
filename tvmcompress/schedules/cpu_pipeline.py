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
from .cpu_rules.rule_base import guarded
from .cpu_rules.packed_compute import legalize_map
from .int8_rules import Int8DotProduct, make_int8_legalize_map
from .propagate_nan import PropagateNaN
from .serial_bf16_constant_stores import SerialBF16ConstantStores
from .cpu_rules.restore_clip import RestoreScalarMinMax
from ..passes.fold_channel_affine import FoldChannelAffine
from ..passes.fold_constants_numpy import fold_constants
from ..passes.unique_binding_names import UniqueBindingNames


# ConvertLayout's desired layouts. conv2d in NHWC data / OHWI weights; every op without an entry follows the layout
# of its input. NOTE: conv2d_transpose is pinned to NCHW because TVM 0.27 legalizes it only in NCHW/IOHW: left to
# follow an NHWC input it reached the VM unlowered ("CodeGenVM cannot emit ... conv2d_transpose", issue 17).
CHANNELS_LAST_LAYOUTS = {"relax.nn.conv2d": ["NHWC", "OHWI"], "relax.nn.conv2d_transpose": ["NCHW", "IOHW"]}


def host_target(num_cores: int | None = None) -> tvm.target.Target:
    """An LLVM target for this machine's CPU (an mcpu the host lacks would crash with SIGILL)."""
    from ..targets import cpu_features

    features = cpu_features.detect()
    config = {"kind": "llvm", "mcpu": features.mcpu}
    if features.llvm_mattr:  # AMX, AVX512-BF16/FP16 that LLVM's host name may not imply (targets/cpu_features.py)
        config["mattr"] = features.llvm_mattr
    if num_cores:
        config["num-cores"] = num_cores
    return tvm.target.Target(config)


def channels_last(mod: tvm.IRModule) -> tvm.IRModule:
    """conv2d in NHWC data / OHWI weights, with the permutes it adds folded into the weights. The importer's Clip
    (a call_tir, which ConvertLayout cannot see into) becomes maximum/minimum first, so that it follows the
    layout instead of running in NCHW between two transposes."""
    return tvm.transform.Sequential(
        [RestoreScalarMinMax(), relax.transform.ConvertLayout(CHANNELS_LAST_LAYOUTS), fold_constants()]
    )(mod)


def cpu_lowering_passes(target: tvm.target.Target, winograd: bool = True) -> list[tvm.transform.Pass]:
    """The steps up to scheduling: legalized, fused, unscheduled PrimFuncs (`winograd`: see
    packed_compute.legalize_map).

    Tuning extracts its tasks from exactly this module, so that the database's workloads match the PrimFuncs the
    build schedules. Run them under `with target:` (the packed legalization reads the SIMD width from it).
    """
    return [
        # BN and friends become elementwise ops on constants, which FoldConstant shrinks and
        # FuseOps later fuses into the conv epilogue.
        relax.transform.DecomposeOpsForInference(),
        relax.transform.CanonicalizeBindings(),
        fold_constants(),
        # A decomposed BatchNorm (and any per-channel scale or shift after a conv/matmul) folds into the
        # weight and one bias: the epilogue adds once instead of subtract, divide, multiply, add per element.
        UniqueBindingNames(),
        FoldChannelAffine(),
        # NOTE: before ConvertLayout, which cannot see into the importer's call_tir Clip.
        RestoreScalarMinMax(),
        # NHWC: channels innermost, so conv, depthwise conv, pooling and the fused
        # epilogues all vectorize over channels. Weight permutes fold into constants.
        relax.transform.ConvertLayout(CHANNELS_LAST_LAYOUTS),
        fold_constants(),
        *cpu_generic.library_dispatch_passes(target),
        # erf (GELU), exp (softmax), tanh, sigmoid -> vectorizable polynomial versions; libm calls
        # would be scalar. Costs ~1e-6 relative error.
        relax.transform.FastMathTransform(),
        # NOTE: conv2d/matmul with constant weights legalize to computes on weights packed
        # with numpy here, so the artifact carries packed weights.
        # int8 matmuls and conv2ds with constant weights pack for the target's dot-product instruction
        # (vpdpbusd, vpmaddubsw, sdot; schedules/int8_rules.py).
        relax.transform.LegalizeOps(customize_legalize_map=make_int8_legalize_map(legalize_map(winograd))),
        relax.transform.AnnotateTIROpPattern(),
        fold_constants(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
        relax.transform.DeadCodeElimination(),
    ]


def cpu_schedule_passes(target: tvm.target.Target, tuned=None, winograd: bool = True) -> list[tvm.transform.Pass]:
    """Lowering, then schedules: tuned records first (where `tuned`, a MetaSchedule database, has one), then our
    default rules for every PrimFunc still unscheduled. After these every PrimFunc that some rule can schedule
    carries a schedule; the others (extern calls, zero-size loops) stay as LLVM compiles them unscheduled."""
    passes = cpu_lowering_passes(target, winograd)
    if tuned is not None:
        from .tuning import apply_database

        passes.append(apply_database(tuned))
    passes.append(dlight.ApplyDefaultSchedule(*guarded(Int8DotProduct(), *default_rules())))
    # NOTE: after every schedule (tuned ones too): TVM's bfloat16 legalization fails on the vectorized constant
    # stores that scheduling leaves.
    passes.append(SerialBF16ConstantStores)
    return passes


def apply_default_schedules(target: tvm.target.Target) -> tvm.transform.Pass:
    """Our default rules alone, for modules that are already lowered (tuning's fallback measurement)."""

    @tvm.transform.module_pass(opt_level=0, name="tvmcompress.ApplyDefaultSchedules")
    def _apply(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        with target:
            mod = dlight.ApplyDefaultSchedule(*guarded(Int8DotProduct(), *default_rules()))(mod)
            return SerialBF16ConstantStores(mod)

    return _apply


def cpu_pipeline(target: tvm.target.Target, tuned=None, winograd: bool = True) -> tvm.transform.Pass:
    """The Relax -> VM-ready pipeline with tvmcompress's default CPU schedules (and tuned ones from `tuned`)."""

    @tvm.transform.module_pass(opt_level=0, name="tvmcompress.cpu_pipeline")
    def _pipeline(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        with target:
            passes = [
                *cpu_schedule_passes(target, tuned, winograd),
                # NOTE: after the schedules, whose rules read TIR max/min (restore_clip.py): ONNX's NaN semantics.
                PropagateNaN(),
                *cpu_generic.dataflow_lower_passes(target),
                *cpu_generic.finalize_passes(target),
            ]
            return tvm.transform.Sequential(passes)(mod)

    return _pipeline
