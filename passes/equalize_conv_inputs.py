"""EqualizeConvInputs: give every channel of a conv's input the same share of the per-tensor int8 range.

Why: static int8 quantizes each conv input with ONE scale per tensor. In depthwise nets with hard-swish (ESNet,
LCNet, MobileNetV3: PicoDet's backbone and neck) the channel ranges of a conv input differ by 10-100x: folded
BatchNorm gives some depthwise channels large gains (Nagel et al., "Data-Free Quantization Through Weight
Equalization and Bias Correction", ICCV 2019, Fig. 2), and hard-swish, unlike ReLU6, does not cap them. The one
scale then fits the largest channel, and the typical channel gets a handful of codes: measured on the PicoDet-style
test detector (tests/numerics/detector_models.py), the first depthwise conv's input spans [-0.4, 94] while most
channels stay below 5, its output has 13 dB SQNR, and the error compounds to 12 dB on the boxes and -7 dB on the
class scores.

The rewrite, for an activation X read by convs with constant weights W (any layout, any groups) and s > 0 in R^C:

    conv(X, W) = conv(X * (1/s), W * s)     (W's element [o, i, ...] meets input channel c(o, i): scaled by s_c)

exact in real arithmetic. X * (1/s) is an explicit multiply that FuseOps fuses into X's producer (the previous
layer's float epilogue, before its requantize), so int8 kernels are unchanged. The weights are quantized per output
channel, so:
- a conv where each output channel reads ONE input channel (depthwise) takes any s for free: s_c = max|X_c| / M
  (M = the largest max|X_c|) makes every channel span the whole range;
- a conv summing over input channels pays in weight precision, so s is SmoothQuant's balance
  (Xiao et al., ICML 2023), s_c = sqrt(max|X_c| / max|W_c|), max|W_c| over all weights that meet channel c.

Only activations whose channels are really spread are rewritten (largest / median channel max|X| >= SPREAD, 8):
a ReLU CNN's inputs are left alone, so its int8 result is bit-identical to before. A channel never seen non-zero
keeps s_c = 1, and s_c >= MIN_SCALE: a channel silent on the calibration data must not become an outlier on other
data.

Pre: the prepared float module (quantize.prepare_for_quantization: constant weights, unique binding names); keys
of `scales` are parameters or bindings of `main`, each read by at least one conv2d that `quant_rules.RULES`
applies to, with a float32 [C] vector, C its channels. Post: each such conv reads `<X>_equalized = X * (1/s)`
(one multiply per activation, emitted before its first reader) with its weights scaled; other readers of X still
read X. Runs before calibration (quantize._quantize_int8), so that calibration measures the equalized ranges.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from .calibrate import run_instrumented
from .quant_rules import RULES, constant_value, find_quantizable_layers, rebind

__all__ = ["EqualizeConvInputs", "equalization_scales", "measure_conv_input_ranges", "SPREAD", "MIN_SCALE"]

SPREAD = 8.0
MIN_SCALE = 1.0 / 256  # a channel at most 256x amplified: beyond, its calibrated range would be one code wide

_CONV = "relax.nn.conv2d"


def _conv_readers(mod: tvm.IRModule, exclude: Iterable[str] = ()) -> dict[str, dict[str, relax.Call]]:
    """{activation name -> {binding: call} of the quantizable, non-excluded conv2d that read it}."""
    skipped = set(exclude)
    calls = {b.var.name: b.value for block in mod["main"].body.blocks for b in block.bindings}
    readers: dict[str, list[relax.Call]] = {}
    for layer in find_quantizable_layers(mod, RULES):
        if layer.op != _CONV or layer.name in skipped or layer.binding in skipped:
            continue
        readers.setdefault(layer.activations[0], {})[layer.binding] = calls[layer.binding]
    return readers


def _input_channel_index(call: relax.Call, weight_shape: tuple[int, ...], channels: int) -> np.ndarray:
    """For each element of the weight, the input channel of X it multiplies (broadcastable to the weight)."""
    layout = str(call.attrs.kernel_layout)
    o_axis, i_axis = layout.index("O"), layout.index("I")
    groups = int(call.attrs.groups)
    out_per_group, in_per_group = weight_shape[o_axis] // groups, weight_shape[i_axis]
    if in_per_group * groups != channels:
        raise ValueError(f"conv with {groups} groups of {in_per_group} inputs reads {channels} channels")
    o = np.arange(weight_shape[o_axis]).reshape([-1 if a == o_axis else 1 for a in range(len(weight_shape))])
    i = np.arange(in_per_group).reshape([-1 if a == i_axis else 1 for a in range(len(weight_shape))])
    return (o // out_per_group) * in_per_group + i


def _data_channel_axis(call: relax.Call) -> int:
    return str(call.attrs.data_layout).index("C")


def measure_conv_input_ranges(
    mod: tvm.IRModule,
    calibration_data: Iterable[Mapping[str, np.ndarray]],
    exclude: Iterable[str] = (),
    target: tvm.target.Target | None = None,
) -> dict[str, np.ndarray]:
    """{conv input activation -> max|X| per channel (float64 [C])} over every calibration call."""
    readers = _conv_readers(mod, exclude)
    points = list(readers)
    if not points:
        return {}
    axes = {name: _data_channel_axis(next(iter(readers[name].values()))) for name in points}
    absmax: dict[str, np.ndarray] = {}
    for values in run_instrumented(mod, points, calibration_data, target, what="equalization"):
        for name, x in zip(points, values):
            x = np.moveaxis(np.where(np.isfinite(x), np.abs(x), 0.0), axes[name], -1)
            batch_max = x.reshape(-1, x.shape[-1]).max(axis=0).astype(np.float64)
            absmax[name] = batch_max if name not in absmax else np.maximum(absmax[name], batch_max)
    return absmax


def equalization_scales(
    mod: tvm.IRModule, absmax: Mapping[str, np.ndarray], exclude: Iterable[str] = ()
) -> dict[str, np.ndarray]:
    """{activation -> s (float32 [C])} for the activations whose channel ranges are spread (see the module
    docstring for the two formulas)."""
    readers = _conv_readers(mod, exclude)
    scales = {}
    for name, x_max in absmax.items():
        convs = list(readers.get(name, {}).values())
        seen = x_max > 0
        if not convs or not seen.any() or x_max.max() < SPREAD * np.median(x_max):
            continue
        channels = x_max.size
        w_max = np.zeros(channels)
        one_input = True  # every output channel reads one input channel: depthwise
        for call in convs:
            weight = constant_value(call.args[1])
            index = np.broadcast_to(_input_channel_index(call, weight.shape, channels), weight.shape)
            np.maximum.at(w_max, index.ravel(), np.abs(weight).ravel())
            one_input = one_input and weight.shape[str(call.attrs.kernel_layout).index("I")] == 1
        if one_input:
            s = x_max / x_max.max()
        else:
            s = np.sqrt(x_max / np.maximum(w_max, 1e-12))
            s = s / s[seen].max()
        s = np.where(seen & (w_max > 0), np.maximum(s, MIN_SCALE), 1.0)
        scales[name] = s.astype(np.float32)
    return scales


@tvm.transform.module_pass(opt_level=0, name="tvmcompress.EqualizeConvInputs")
class EqualizeConvInputs:
    def __init__(self, scales: Mapping[str, np.ndarray], exclude: Iterable[str] = ()):
        self.scales = {name: np.asarray(s, np.float32) for name, s in scales.items()}
        self.exclude = tuple(exclude)

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        if not self.scales:
            return mod
        convs = {binding for calls in _conv_readers(mod, self.exclude).values() for binding in calls}
        rewriter = _Equalizer(mod, self.scales, convs)
        for gvar, func in mod.functions_items():
            if isinstance(func, relax.Function) and gvar.name_hint == "main":
                rewriter.builder_.update_func(gvar, rewriter.visit_expr(func))
        return rewriter.builder_.get()


@mutator
class _Equalizer(PyExprMutator):
    def __init__(self, mod: tvm.IRModule, scales: dict[str, np.ndarray], convs: set[str]):
        super().__init__(mod)
        self.scales = scales
        self.convs = convs  # binding names of the convs to rewrite (quantizable, not excluded)
        self.equalized: dict[str, relax.Var] = {}

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        call = binding.value
        x = call.args[0] if binding.var.name in self.convs else None
        s = self.scales.get(x.name) if isinstance(x, relax.Var) else None
        if s is None:
            return super().visit_var_binding_(binding)
        weight = constant_value(call.args[1])
        index = _input_channel_index(call, weight.shape, s.size)
        scaled = (weight.astype(np.float64) * s.astype(np.float64)[index]).astype(np.float32)
        args = [self._equalized(x, s, call), relax.const(scaled, "float32"), *map(self.visit_expr, call.args[2:])]
        rebind(self, binding.var, relax.Call(call.op, args, call.attrs))

    def _equalized(self, x: relax.Var, s: np.ndarray, call: relax.Call) -> relax.Var:
        if x.name not in self.equalized:
            rank = len(call.args[0].ty.shape)
            shape = [-1 if axis == _data_channel_axis(call) else 1 for axis in range(rank)]
            inverse = relax.const((1.0 / s.astype(np.float64)).astype(np.float32).reshape(shape), "float32")
            self.equalized[x.name] = self.builder_.emit(
                relax.op.multiply(self.visit_expr(x), inverse), name_hint=f"{x.name}_equalized"
            )
        return self.equalized[x.name]
