"""The compile order: every transformation between the Relax import and the build, in one list.

    mod, steps = compress(mod, options, preset, data)

`STAGES` below is the order. Each stage reads the options, does nothing when they do not ask for it, and records
every transformation it applies as a `Step` (name, options, the manifest section it fills) in the order it ran.
The manifest's `passes` list and its per-stage sections are built from these steps (tvmcompress/manifest.py),
never from a second, hand-kept copy of this order.

A new stage joins with one line in `STAGES`: a function `(mod, context, record) -> mod` that calls
`record(...)` once for each transformation it applies.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .config import CompileOptions
from .errors import OptionError
from .targets.presets import TargetPreset

if TYPE_CHECKING:  # tvm is imported by the steps that run: `import tvmcompress` and a cache hit stay light
    import tvm

log = logging.getLogger(__name__)

__all__ = ["Step", "Data", "STAGES", "compress", "stage_input", "stage_output"]


@dataclass(frozen=True)
class Step:
    """One transformation that ran: its manifest name and options, and the record of the manifest `section` it
    fills (None: it adds only its `passes` entry). `before`/`after` are the modules around it."""

    stage: str
    name: str
    options: dict[str, Any]
    section: str | None = None
    record: Any = None
    before: tvm.IRModule | None = field(default=None, repr=False, compare=False)
    after: tvm.IRModule | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class Data:
    """What the steps read besides the module. The calibration and evaluation data are read and checked when a
    step (or the caller's early check) first asks for them, once."""

    calibration: Callable[[], Sequence[dict] | None] = lambda: None
    evaluation: Callable[[], Any] = lambda: None  # passes.quant_analysis.EvalData or None
    inputs: Sequence[Any] = ()  # the model's input TensorSpecs (what --train-data is read against)


@dataclass
class Context:
    options: CompileOptions
    preset: TargetPreset
    data: Data
    stage: str = ""
    float_model: Any = None  # the module before the first lossy stage: --distill's teacher


Record = Callable[..., None]


def _fold_affine(mod: tvm.IRModule, ctx: Context, record: Record) -> tvm.IRModule:
    """With --cluster-bits / --compress-weights: fold per-channel scales and shifts (decomposed BatchNorm, conv
    bias) into the weights and one bias per layer. Fewer constants to store, and magnitude pruning then ranks the
    weights as the layer really scales them. Kept for `--prune-criterion bn`, which reads the BatchNorm scales."""
    options = ctx.options
    if not (options.cluster_bits is not None or options.compress_weights) or (
            options.prune is not None and options.prune.criterion == "bn"):
        return mod
    return _fold_channel_affine(mod, record)


def _fold_channel_affine(mod: tvm.IRModule, record: Record) -> tvm.IRModule:
    from .passes.fold_channel_affine import FoldChannelAffine
    from .passes.quantize import prepare_for_quantization

    prepared = prepare_for_quantization(mod)
    record("tvmcompress.prepare_for_quantization", {}, before=mod, after=prepared)
    folded = FoldChannelAffine()(prepared)
    record("tvmcompress.FoldChannelAffine", {}, before=prepared, after=folded)
    return folded


def _prune(mod: tvm.IRModule, ctx: Context, record: Record) -> tvm.IRModule:
    """--prune (passes/prune.py); the calibration data, when given, feeds the activation criterion, layer ranking
    and reconstruction; --prune-budget chooses per-group ratios from measured sensitivity."""
    options = ctx.options
    if options.prune is None:
        return mod
    calibration = ctx.data.calibration()
    if options.prune_budget is not None:
        from .passes.prune_budget import prune_within_budget

        pruned, pruning = prune_within_budget(mod, options.prune, calibration, ctx.data.evaluation(),
                                              options.prune_budget)
    else:
        from .passes.prune import prune

        pruned, pruning = prune(mod, options.prune, calibration)
    record("tvmcompress.prune", pruning["config"], section="pruning", value=pruning, before=mod, after=pruned)
    return pruned


def _cluster(mod: tvm.IRModule, ctx: Context, record: Record) -> tvm.IRModule:
    """--cluster-bits: k-means weight sharing per layer; with calibration data each codebook is then re-fitted
    to the layer outputs (passes/cluster_refit.py)."""
    options = ctx.options
    if options.cluster_bits is None:
        return mod
    from .passes.cluster import cluster_layers

    # Again after pruning: a no-op when _fold_affine ran, and pruning's reconstruction may add channel shifts.
    mod = _fold_channel_affine(mod, record)
    for_int8 = options.quantize is not None and options.quantize.mode == "int8"
    clustered, clustering = cluster_layers(mod, options.cluster_bits, for_int8, ctx.data.calibration())
    record("tvmcompress.ClusterWeights", {"bits": options.cluster_bits}, section="clustering", value=clustering,
           before=mod, after=clustered)
    return clustered


def _quantize(mod: tvm.IRModule, ctx: Context, record: Record) -> tvm.IRModule:
    """--quantize, with the int8 scheme the target's dot product takes (schedules/int8_rules.int8_scheme).

    A pre-quantized model (QDQ or QOperator, e.g. from onnxruntime's quantize_static) keeps its own quantization:
    its Q/DQ are folded into integer kernels whether or not quantize is asked for, and asking is an error."""
    from .passes.quantize import fold_prequantized, is_prequantized, quantize

    options = ctx.options
    if is_prequantized(mod):
        if options.quantize is not None:
            raise OptionError(
                "the model is already quantized (QuantizeLinear/DequantizeLinear or QLinear* ops): drop {quantize=}"
                f"{options.quantize.mode}; its own quantization is compiled to integer kernels"
            )
        folded, quantization = fold_prequantized(mod)
        record("tvmcompress.fold_prequantized", {}, section="quantization", value=quantization, before=mod,
               after=folded)
        return folded
    if options.quantize is None:
        return mod
    from .schedules.int8_rules import int8_scheme

    config = int8_scheme(options.quantize, ctx.preset)
    if config.mode in ("int8", "dynamic-int8") and ctx.preset.tvm_target.get("kind") == "llvm":
        # NOTE: what the CPU pipeline does to float graphs, done before quantizing. Its ConvertLayout cannot see
        # through quantize/dequantize, so converting the int8 graph left transposes around every quantize and
        # ran pooling in NCHW (2.3 of ResNet-18's 18.7 ms int8 kernel time, profiled); and BatchNorm folded into
        # the weights leaves one add in the requantize epilogue instead of subtract, divide, multiply, add.
        # channels_last also turns the importer's Clip (ReLU6) into maximum/minimum: as call_tir it ran in NCHW
        # between two transposes, in float, and HoistQuantize could not move the next layer's quantize through it
        # (0.7 of MobileNetV2's 5.2 ms int8 kernel time, profiled).
        from .schedules.cpu_pipeline import channels_last

        folded = _fold_channel_affine(mod, record)
        mod = channels_last(folded)
        record("tvmcompress.channels_last", {}, before=folded, after=mod)
    calibration = ctx.data.calibration()
    smoothing = None
    if config.smoothquant is not None:
        # NOTE: on the float module, before int8 calibration: calibration then measures the smoothed ranges.
        from .passes.smooth_quant import smooth_quant

        smoothed, smoothing = smooth_quant(mod, calibration, config.smoothquant, config.exclude)
        record("tvmcompress.SmoothQuant",
               {"alpha": smoothing["alpha"], "smoothed_layers": smoothing["smoothed_layers"]},
               before=mod, after=smoothed)
        mod = smoothed
    evaluation = ctx.data.evaluation() if config.mode == "int8" else None
    if evaluation is not None and options.accuracy_budget is not None:
        # Layers return to float, most sensitive first, until the eval metric is within budget; the per-layer
        # analysis that ranks them (one build per layer) runs only when the fallback is needed.
        from .passes.quant_analysis import quantize_within_budget

        quantized, quantization = quantize_within_budget(mod, config, calibration, evaluation,
                                                         options.accuracy_budget)
    else:
        quantized, quantization = quantize(mod, config, calibration)
        if evaluation is not None:  # the fp32 and int8 metric go into the record (and report.json)
            from .passes.quant_analysis import measure_quantized

            quantization["eval"] = measure_quantized(mod, quantized, evaluation)
    if smoothing is not None:
        quantization["smoothquant"] = smoothing
    record("tvmcompress.quantize", quantization["config"], section="quantization", value=quantization, before=mod,
           after=quantized)
    return quantized


def _distill(mod: tvm.IRModule, ctx: Context, record: Record) -> tvm.IRModule:
    """--distill (passes/distill.py): the float model teaches the pruned / clustered student, whose weights train
    through the grid that quantization then stores exactly. Without --distill, ternary and binary weights are
    measured against the float model and the loss is logged as a warning."""
    from .passes.distill import distill_step

    distilled, distillation = distill_step(mod, ctx.float_model, ctx.options, ctx.data.inputs,
                                           ctx.data.calibration)
    if distillation is not None:
        record("tvmcompress.distill", distillation["config"], section="distillation", value=distillation,
               before=mod, after=distilled)
    elif distilled is not mod:  # measured for the warning on the prepared module, which goes on
        record("tvmcompress.prepare_for_quantization", {}, before=mod, after=distilled)
    return distilled


def _sparse_kernels(mod: tvm.IRModule, ctx: Context, record: Record) -> tvm.IRModule:
    """Rewrite the block-sparse float matmuls that measure faster as BSR kernels (passes/sparse_decision.py)."""
    from .passes.sparse_decision import decide_sparse_layers, sparse_candidates
    from .passes.sparse_dense import SparseDense

    prepared = sparse_candidates(mod)  # the layers are measured on the prepared module; kept only if chosen
    if prepared is None:
        return mod
    decisions = decide_sparse_layers(prepared, ctx.preset, ctx.options.sparse_min_speedup)
    for d in decisions:
        log.info("%s (%s, block %dx%d, %.0f%% zero blocks): %s", d.layer, "x".join(map(str, d.shape)), *d.block,
                 100 * d.block_sparsity, d.reason)
    record("tvmcompress.decide_sparse_layers", {"min_speedup": ctx.options.sparse_min_speedup},
           section="sparse_layers", value=[d.to_json() for d in decisions], before=mod, after=mod)
    chosen = {d.binding: tuple(d.block) for d in decisions if d.sparse}
    if not chosen:
        return mod
    record("tvmcompress.prepare_for_quantization", {}, before=mod, after=prepared)
    sparse = SparseDense(chosen)(prepared)
    record("tvmcompress.SparseDense", {"layers": [d.layer for d in decisions if d.sparse]}, before=prepared,
           after=sparse)
    return sparse


# The order. NOTE on each place:
STAGES: list[tuple[str, Callable[[tvm.IRModule, Context, Record], tvm.IRModule]]] = [
    # Before pruning: magnitudes as the layer scales them.
    ("fold_affine", _fold_affine),
    # Before quantization: channel removal and reconstruction work on float weights, and calibration then
    # measures the ranges of the pruned model.
    ("prune", _prune),
    # After pruning (zeros stay zeros), before quantization, so that int8 quantizes the shared values (with int8
    # the codebook is clustered in each channel's int8 units: passes/cluster_weights.py).
    ("cluster", _cluster),
    # After pruning and clustering, before quantization: the quantized kernels have no gradient, so the float
    # weights train through the quantization grid (straight-through), which quantize then stores exactly.
    ("distill", _distill),
    ("quantize", _quantize),
    # Last: only float matmuls with constant block-sparse weights qualify, and the decision is measured per layer.
    ("sparse", _sparse_kernels),
]


def compress(mod: tvm.IRModule, options: CompileOptions, target: TargetPreset,
             data: Data | None = None) -> tuple[tvm.IRModule, list[Step]]:
    """Run `STAGES` on the imported module; return the compressed module and the steps that ran, in order."""
    ctx = Context(options, target, data or Data())
    steps: list[Step] = []

    def record(name: str, options: dict[str, Any], *, section: str | None = None, value: Any = None,
               before: tvm.IRModule | None = None, after: tvm.IRModule | None = None) -> None:
        steps.append(Step(ctx.stage, name, options, section, value, before, after))

    for stage, run in STAGES:
        ctx.stage = stage
        if stage == "prune":
            ctx.float_model = mod
        mod = run(mod, ctx, record)
    return mod, steps


def stage_input(steps: Sequence[Step], stage: str, default: tvm.IRModule | None = None) -> tvm.IRModule | None:
    """The module that `stage` started from, if it did anything."""
    return next((s.before for s in steps if s.stage == stage), default)


def stage_output(steps: Sequence[Step], stage: str) -> tvm.IRModule | None:
    """The module `stage` produced, if it did anything."""
    return next((s.after for s in reversed(steps) if s.stage == stage), None)


def section(steps: Sequence[Step], name: str) -> Any:
    """The record a step filed under the manifest section `name`, or None."""
    return next((s.record for s in steps if s.section == name), None)
