"""HoistQuantize: keep int8 through ReLU, max pooling and reshapes by quantizing before them.

Rewrites (per-tensor quantize with constant scale s and zero point z):

    quantize(relu(x))           -> maximum(quantize(x), z)        relu(x) >= 0  <=>  q >= z
    quantize(maximum(x, c))     -> maximum(quantize(x), quantize(c))   scalar constant c (Clip, ReLU6): quantize
    quantize(minimum(x, c))     -> minimum(quantize(x), quantize(c))   is monotonic, so it commutes with max/min
    quantize(max_pool2d(x))     -> max_pool2d(quantize(x))        quantize is monotonic, so it commutes with max
    quantize(reshape(x, shape)) -> reshape(quantize(x), shape)    likewise flatten-style permutes of data
    quantize(dequantize(q, s, z), s, z) -> q                      same params and dtype: the identity

All are exact (bit-identical to quantizing afterwards). A bound that quantizes to the lowest (maximum) or highest
(minimum) code is dropped: the quantize's own saturation already applies it, as for ReLU6 calibrated on [0, 6]. Applied to a fixpoint, the quantize of the next layer
lands right after the previous layer's float epilogue, where FuseOps fuses it: the conv/matmul kernel then
requantizes its int32 accumulator straight to int8, and ReLU/pooling/reshape run on int8 tensors.

Not hoisted (not exact with per-tensor params of the output alone): concat of inputs with different scales,
residual add, average pooling. If the float value also has other users, the op is duplicated in int8 (the
float one stays for them); that costs an elementwise op, never accuracy.

Pre: FoldQDQToInt8 ran (or any module with relax.quantize). Post: no quantize reads a relu, a maximum/minimum with a
scalar constant, a max_pool2d or a reshape.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import is_const, is_op, rewrite_call, wildcard

from .quant_rules import constant_value

__all__ = ["HoistQuantize"]

_MAX_ROUNDS = 64  # each round hoists one step up each chain; chains are short (clip -> pool -> reshape)


@tvm.transform.module_pass(opt_level=0, name="tvmcompress.HoistQuantize")
class HoistQuantize:
    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        rules = _Rules()
        updates = {}
        for gvar, func in mod.functions_items():
            if not isinstance(func, relax.Function):
                continue
            for _ in range(_MAX_ROUNDS):
                new_func = func
                for pattern, rewriter in rules.table:
                    new_func = rewrite_call(pattern, rewriter, new_func)
                if new_func.same_as(func):
                    break
                func = new_func
            updates[gvar] = func
        new_mod = tvm.IRModule(dict(mod.functions_items()), attrs=mod.attrs)
        for gvar, func in updates.items():
            new_mod[gvar] = func
        return relax.transform.DeadCodeElimination()(new_mod) if updates else new_mod


class _Rules:
    def __init__(self):
        self.x, self.scale, self.zero_point = wildcard(), is_const(), is_const()
        self.relu = is_op("relax.nn.relu")(self.x)
        self.bound = is_const()
        self.max = is_op("relax.maximum")(self.x, self.bound)
        self.min = is_op("relax.minimum")(self.x, self.bound)
        self.pool = is_op("relax.nn.max_pool2d")(self.x)
        self.shape = wildcard()
        self.reshape = is_op("relax.reshape")(self.x, self.shape)
        # A pre-quantized model's DQ -> max_pool -> Q, once the Q is hoisted, reads Q(DQ(q)) with equal params.
        self.q_in, self.s_in, self.z_in = wildcard(), is_const(), is_const()
        self.dequantized = is_op("relax.dequantize")(self.q_in, self.s_in, self.z_in)
        self.table = [
            (self._quantize_of(self.dequantized), self._drop_round_trip),
            (self._quantize_of(self.relu), self._hoist_relu),
            (self._quantize_of(self.max), self._hoist_bound),
            (self._quantize_of(self.min), self._hoist_bound),
            (self._quantize_of(self.pool), self._hoist_unary),
            (self._quantize_of(self.reshape), self._hoist_unary),
        ]

    def _quantize_of(self, inner):
        return is_op("relax.quantize")(inner, self.scale, self.zero_point)

    def _quantize_inner(self, orig: relax.Call, matches) -> relax.Expr | None:
        if constant_value(matches[self.scale]).size != 1 or constant_value(matches[self.zero_point]).size != 1:
            return None  # per-channel quantize: the channel axis may move through a reshape
        return relax.Call(orig.op, [matches[self.x], orig.args[1], orig.args[2]], orig.attrs)

    def _drop_round_trip(self, orig: relax.Call, matches) -> relax.Expr:
        q = matches[self.q_in]
        pairs = [(constant_value(matches[a]), constant_value(matches[b]))
                 for a, b in ((self.s_in, self.scale), (self.z_in, self.zero_point))]
        same = all(a.size == 1 and a.dtype == b.dtype and np.array_equal(a, b) for a, b in pairs)
        if not same or str(q.ty.dtype) != str(orig.attrs.out_dtype):
            return orig
        return q

    def _hoist_relu(self, orig: relax.Call, matches) -> relax.Expr:
        quantized = self._quantize_inner(orig, matches)
        if quantized is None:
            return orig
        zero_point = constant_value(matches[self.zero_point])
        if int(zero_point.reshape(())) == np.iinfo(zero_point.dtype).min:
            return quantized  # z is the lowest code: maximum(q, z) is q
        return relax.op.maximum(quantized, matches[self.zero_point])

    def _hoist_bound(self, orig: relax.Call, matches) -> relax.Expr:
        """quantize(max|min(x, c)) -> max|min(quantize(x), quantize(c)); the bound dropped where saturation
        already applies it."""
        quantized = self._quantize_inner(orig, matches)
        bound = constant_value(matches[self.bound])
        if quantized is None or bound.size != 1 or bound.dtype != np.float32:
            return orig
        scale = constant_value(matches[self.scale]).astype(np.float32).reshape(())
        zero_point = constant_value(matches[self.zero_point]).reshape(())
        dtype = np.dtype(str(orig.attrs.out_dtype))
        info = np.iinfo(dtype)
        # As relax.quantize computes it: float32 division, round half to even, add, saturate.
        code = np.clip(np.round(bound.reshape(()) / scale) + np.float32(zero_point), info.min, info.max)
        is_max = self.max in matches
        if int(code) == (info.min if is_max else info.max):
            return quantized
        op = relax.op.maximum if is_max else relax.op.minimum
        return op(quantized, relax.const(np.array(code, dtype), str(dtype)))

    def _hoist_unary(self, orig: relax.Call, matches) -> relax.Expr:
        quantized = self._quantize_inner(orig, matches)
        if quantized is None:
            return orig
        inner = matches[self.pool] if self.pool in matches else matches[self.reshape]
        return relax.Call(inner.op, [quantized, *inner.args[1:]], inner.attrs)
