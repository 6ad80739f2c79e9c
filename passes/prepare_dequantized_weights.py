"""PrepareDequantizedWeights: bring the weights of an imported pre-quantized (QDQ) model into the form that
FoldQDQToInt8 matches, without turning them back into float.

A QDQ model (onnxruntime's quantize_static, QuantFormat.QDQ) imports as `dequantize(W_q, s_w, z_w)` feeding the
conv/matmul, with the layout ops the importer adds in between (Gemm's transB -> permute_dims), and int32 biases
as `dequantize(B_q, s_x * s_w, 0)` then reshape. FoldConstant would fold all of them, the int8 weights included,
into float constants; this pass folds only what must be folded and keeps the weights int8:

    permute_dims(dequantize(W_q, s, z, axis=a))  ->  dequantize(transpose(W_q), s, z, axis=perm.index(a))
    dequantize(W_q uint8/int8, s, z) with W_q - z within int8  ->  dequantize(W_q - z as int8, s, 0)
    dequantize(B int32 constant, s, z)           ->  float constant (B - z) * s
    reshape(constant, shape)                     ->  constant

All rewrites are exact (integer shifts and transposes; the bias is what DequantizeLinear computes, in float32).
Pre: an imported module whose constants are bound (keep_params_in_input=False). Post: every dequantize of a
constant weight reads an int8 constant with zero point 0 where that is exact, and sits directly on the
conv2d/matmul weight argument; biases are float constants. Runs before FoldQDQToInt8.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import is_const, is_op, rewrite_call, wildcard

from .quant_rules import constant_value

__all__ = ["PrepareDequantizedWeights"]

_EIGHT_BIT = (np.int8, np.uint8)


@tvm.transform.module_pass(opt_level=0, name="tvmcompress.PrepareDequantizedWeights")
class PrepareDequantizedWeights:
    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        rules = _Rules()
        new_mod = tvm.IRModule(dict(mod.functions_items()), attrs=mod.attrs)
        for gvar, func in mod.functions_items():
            if not isinstance(func, relax.Function):
                continue
            # NOTE: constants first (the bias chain dequantize -> reshape folds in two rounds), then the
            # weight rewrites, which only see dequantize calls that are still there.
            for _ in range(4):
                new_func = rewrite_call(rules.reshape, rules.fold_reshape, func)
                new_func = rewrite_call(rules.dequantize, rules.fold_dequantize, new_func)
                new_func = rewrite_call(rules.transposed, rules.push_transpose, new_func)
                if new_func.same_as(func):
                    break
                func = new_func
            new_mod[gvar] = func
        return relax.transform.CanonicalizeBindings()(new_mod)


class _Rules:
    def __init__(self):
        self.data, self.scale, self.zero_point = is_const(), is_const(), is_const()
        self.dequantize = is_op("relax.dequantize")(self.data, self.scale, self.zero_point)
        self.transposed = is_op("relax.permute_dims")(self.dequantize)
        self.constant = is_const()
        self.reshape = is_op("relax.reshape")(self.constant, wildcard())

    def fold_reshape(self, orig: relax.Call, matches) -> relax.Expr:
        value = constant_value(matches[self.constant])
        return relax.const(value.reshape([int(d) for d in orig.ty.shape]), str(value.dtype))

    def fold_dequantize(self, orig: relax.Call, matches) -> relax.Expr:
        data = constant_value(matches[self.data])
        scale, zero_point = constant_value(matches[self.scale]), constant_value(matches[self.zero_point])
        axis = int(orig.attrs.axis) % max(data.ndim, 1)
        if data.dtype in _EIGHT_BIT:
            return self._shift_to_int8(orig, data, scale, zero_point, axis)
        real = (data.astype(np.int64) - _along(zero_point, axis, data.ndim)).astype(np.float32)
        real = real * _along(scale, axis, data.ndim).astype(np.float32)
        return relax.const(real.astype(str(orig.attrs.out_dtype)), str(orig.attrs.out_dtype))

    def _shift_to_int8(self, orig, data, scale, zero_point, axis) -> relax.Expr:
        if data.dtype == np.int8 and not np.any(zero_point):
            return orig
        shifted = data.astype(np.int64) - _along(zero_point, axis, data.ndim)
        if shifted.min(initial=0) < -128 or shifted.max(initial=0) > 127:
            return orig
        return relax.op.dequantize(
            relax.const(shifted.astype(np.int8), "int8"), relax.const(scale, str(scale.dtype)),
            relax.const(np.zeros(zero_point.shape, np.int8), "int8"), axis=int(orig.attrs.axis),
            out_dtype=str(orig.attrs.out_dtype),
        )

    def push_transpose(self, orig: relax.Call, matches) -> relax.Expr:
        dequantize = matches[self.dequantize]
        data = constant_value(matches[self.data])
        axes = orig.attrs.axes
        perm = list(range(data.ndim))[::-1] if axes is None else [int(a) for a in axes]
        axis = int(dequantize.attrs.axis) % data.ndim
        return relax.op.dequantize(
            relax.const(np.ascontiguousarray(data.transpose(perm)), str(data.dtype)), dequantize.args[1],
            dequantize.args[2], axis=perm.index(axis), out_dtype=str(dequantize.attrs.out_dtype),
        )


def _along(values: np.ndarray, axis: int, ndim: int) -> np.ndarray:
    """A per-tensor or per-axis parameter shaped to broadcast against a rank-`ndim` tensor along `axis`."""
    if values.size == 1 or ndim == 0:
        return values.reshape(())
    shape = [1] * ndim
    shape[axis] = values.size
    return values.reshape(shape)
