"""FoldQDQToInt8: turn dequantize -> conv2d/matmul (fake quantization) into integer compute.

Matches `op(dequantize(x_q, s_x, z_x), dequantize(W_q, s_w[C], 0))`, optionally followed by `add(., bias)` with a
per-output-channel constant bias, and emits

    acc = op(x_q, W_q, out_dtype="int32")                           # int8/uint8 x int8 -> int32
    y   = astype(acc + k[C], "float32") * (s_x * s_w[C])            # fused epilogue (FuseOps fuses it into op)
    k[C] = round(bias[C] / (s_x * s_w[C])) - z_x * sum(W_q[C])      # int32 bias and zero-point correction

which is exact up to the rounding of the bias to int32 (at most half a quantization step of the output).
A conv2d with padding and z_x != 0 pads x_q explicitly with z_x (the quantized 0) first, because the conv's own
padding would insert q = 0, i.e. the real value -z_x * s_x.
A matmul of two dequantized activations (per tensor; attention in a pre-quantized QDQ model) becomes an 8-bit
matmul with int32 zero-point corrections (rowsum/colsum computed at run time), times s_a * s_b.
A per-tensor weight scale (pre-quantized models) may come with any dequantize axis.

Pre: InsertQDQ and QuantizeWeights ran (weights are int8 constants, symmetric per channel: zero point 0);
activation scale and zero point are constants. Post: no matched fake-quant op remains; anything not matched
(non-constant scale, non-zero weight zero point) is left as valid fake-quantized float compute.
Runs before HoistQuantize, which then moves the next layer's quantize into this epilogue.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import is_const, is_op, rewrite_call, wildcard

from .quant_rules import constant_value

__all__ = ["FoldQDQToInt8"]


@tvm.transform.module_pass(opt_level=0, name="tvmcompress.FoldQDQToInt8")
class FoldQDQToInt8:
    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        patterns = _Patterns()
        new_mod = mod
        for gvar, func in mod.functions_items():
            if not isinstance(func, relax.Function):
                continue
            # NOTE: the bias form first, so that a bias add is absorbed into the int32 constant rather than
            # left as a float add after the epilogue.
            func = rewrite_call(patterns.with_bias, patterns.rewrite_with_bias, func)
            func = rewrite_call(patterns.op, patterns.rewrite, func)
            # NOTE: after the weight forms, which would otherwise be taken as two activations.
            func = rewrite_call(patterns.act_matmul, patterns.rewrite_act_matmul, func)
            new_mod = _with_function(new_mod, gvar, func)
        return new_mod


def _with_function(mod: tvm.IRModule, gvar: tvm.ir.GlobalVar, func) -> tvm.IRModule:
    new_mod = tvm.IRModule(dict(mod.functions_items()), attrs=mod.attrs)
    new_mod[gvar] = func
    return new_mod


class _Patterns:
    def __init__(self):
        self.x_q, self.s_x, self.z_x = wildcard(), is_const(), is_const()
        self.w_q, self.s_w, self.z_w = is_const(), is_const(), is_const()
        self.bias = is_const()
        self.x_dq = is_op("relax.dequantize")(self.x_q, self.s_x, self.z_x)
        self.w_dq = is_op("relax.dequantize")(self.w_q, self.s_w, self.z_w)
        self.op = is_op("relax.nn.conv2d")(self.x_dq, self.w_dq) | is_op("relax.matmul")(self.x_dq, self.w_dq)
        self.with_bias = is_op("relax.add")(self.op, self.bias)
        # activation x activation (attention's q @ k^T, p @ v in a QDQ model)
        self.a_q, self.s_a, self.z_a = wildcard(), is_const(), is_const()
        self.b_q, self.s_b, self.z_b = wildcard(), is_const(), is_const()
        self.act_matmul = is_op("relax.matmul")(
            is_op("relax.dequantize")(self.a_q, self.s_a, self.z_a),
            is_op("relax.dequantize")(self.b_q, self.s_b, self.z_b),
        )

    def rewrite_act_matmul(self, orig: relax.Call, matches) -> relax.Expr:
        """(a - z_a) @ (b - z_b) = a @ b - z_a * colsum(b) - rowsum(a) * z_b + K z_a z_b, in int32 with 8-bit
        operands, then * (s_a * s_b): exact up to the float32 rescale, per-tensor parameters only."""
        s_a, z_a, s_b, z_b = (constant_value(matches[p]) for p in (self.s_a, self.z_a, self.s_b, self.z_b))
        a_q, b_q = matches[self.a_q], matches[self.b_q]
        dtypes = {str(a_q.ty.dtype), str(b_q.ty.dtype)}
        if any(v.size != 1 for v in (s_a, z_a, s_b, z_b)) or not dtypes <= {"int8", "uint8"}:
            return orig
        if str(orig.attrs.out_dtype) not in ("None", "", "void", "float32"):
            return orig
        z_a, z_b = int(z_a.reshape(())), int(z_b.reshape(()))
        k = int(a_q.ty.shape[-1])
        acc = relax.op.matmul(a_q, b_q, out_dtype="int32")
        if z_a:
            colsum = relax.op.sum(relax.op.astype(b_q, "int32"), axis=-2, keepdims=True)
            acc = relax.op.subtract(acc, relax.op.multiply(colsum, relax.const(z_a, "int32")))
        if z_b:
            rowsum = relax.op.sum(relax.op.astype(a_q, "int32"), axis=-1, keepdims=True)
            acc = relax.op.subtract(acc, relax.op.multiply(rowsum, relax.const(z_b, "int32")))
        if z_a and z_b:
            acc = relax.op.add(acc, relax.const(k * z_a * z_b, "int32"))
        scale = np.float32(float(s_a.reshape(())) * float(s_b.reshape(())))
        return relax.op.multiply(relax.op.astype(acc, "float32"), relax.const(scale, "float32"))

    def rewrite_with_bias(self, orig: relax.Call, matches) -> relax.Expr:
        return self._fold(orig, matches, constant_value(matches[self.bias]))

    def rewrite(self, orig: relax.Call, matches) -> relax.Expr:
        return self._fold(orig, matches, None)

    def _fold(self, orig: relax.Call, matches, bias: np.ndarray | None) -> relax.Expr:
        call = matches[self.op]
        w_dq = matches[self.w_dq]
        s_x, z_x = constant_value(matches[self.s_x]), constant_value(matches[self.z_x])
        w_q, s_w, z_w = (constant_value(matches[p]) for p in (self.w_q, self.s_w, self.z_w))
        out_dtype = str(call.attrs.out_dtype)
        if (
            s_x.size != 1
            or z_x.size != 1
            or w_q.dtype != np.int8
            or np.any(z_w != 0)
            or out_dtype not in ("None", "", "void", "float32")
        ):
            return orig
        s_x, z_x = float(s_x.reshape(())), int(z_x.reshape(()))
        is_conv = call.op.name == "relax.nn.conv2d"
        out_ndim = len(call.ty.shape)
        w_axis = int(w_dq.attrs.axis) % w_q.ndim
        if s_w.size == 1:  # per-tensor weight scale (a pre-quantized model's): the dequantize axis is moot
            w_axis = str(call.attrs.kernel_layout).index("O") if is_conv else 1
        if is_conv:
            out_axis = str(call.attrs.out_layout or call.attrs.data_layout).index("C")
        else:
            out_axis = out_ndim - 1
            if w_q.ndim != 2 or w_axis != 1:
                return orig
        channels = w_q.shape[w_axis]
        scale = (s_x * s_w.reshape(-1).astype(np.float64)) * np.ones(channels)
        if not np.all(scale > 0) or not np.all(np.isfinite(scale)):
            return orig  # a zero weight scale (a pre-quantized model's) has no accumulator units
        if bias is not None:
            per_channel = _per_channel(bias, channels, out_axis, out_ndim)
            if per_channel is None:
                return orig
        # k[C]: int32 bias and the zero-point correction, in accumulator units. Its size is checked in float64
        # before any cast to an integer: a channel whose BatchNorm gamma is ~0 (folded into the conv, common in
        # trained detectors) has a weight scale ~1e-30, and its bias in accumulator units exceeds even int64.
        reduce_axes = tuple(i for i in range(w_q.ndim) if i != w_axis)
        k = -z_x * w_q.astype(np.float64).sum(axis=reduce_axes)
        if bias is not None:
            k = k + np.round(per_channel / scale)
        if not np.all(np.abs(k) < 2**31):  # also False for NaN
            return orig
        k = k.astype(np.int64)

        x_q = matches[self.x_q]
        weight = relax.const(w_q, "int8")
        if is_conv:
            attrs = call.attrs
            padding = [int(p) for p in attrs.padding]
            if z_x != 0 and any(padding):
                x_q = relax.op.nn.pad(x_q, _pad_width(str(attrs.data_layout), padding), "constant", float(z_x))
                padding = [0, 0, 0, 0]
            acc = relax.op.nn.conv2d(
                x_q, weight, attrs.strides, padding, attrs.dilation, attrs.groups,
                attrs.data_layout, attrs.kernel_layout, attrs.out_layout, out_dtype="int32",
            )
        else:
            acc = relax.op.matmul(x_q, weight, out_dtype="int32")
        broadcast = [1] * out_ndim
        broadcast[out_axis] = channels
        if np.any(k != 0):
            acc = relax.op.add(acc, relax.const(k.astype(np.int32).reshape(broadcast), "int32"))
        return relax.op.multiply(
            relax.op.astype(acc, "float32"), relax.const(scale.astype(np.float32).reshape(broadcast), "float32")
        )


def _per_channel(bias: np.ndarray, channels: int, out_axis: int, out_ndim: int) -> np.ndarray | None:
    """The bias as a [C] vector if it varies only along the output channel axis (right-aligned broadcast)."""
    if bias.ndim > out_ndim:
        return None
    shape = (1,) * (out_ndim - bias.ndim) + bias.shape
    if any(d != 1 for i, d in enumerate(shape) if i != out_axis) or shape[out_axis] not in (1, channels):
        return None
    return np.broadcast_to(bias.reshape(-1).astype(np.float64), (channels,))


def _pad_width(layout: str, padding: list[int]) -> list[int]:
    """relax.nn.pad widths (before/after per axis, flattened) for conv2d padding [top, left, bottom, right]."""
    width = [0] * (2 * len(layout))
    h, w = layout.index("H"), layout.index("W")
    width[2 * h], width[2 * h + 1] = padding[0], padding[2]
    width[2 * w], width[2 * w + 1] = padding[1], padding[3]
    return width
