"""QuantizeWeights: replace the float weight of each quantizable op by dequantize(int8 weight).

Weights are quantized symmetric per output channel (scale_c = max|W_c| / 127, zero_point 0, values in
[-127, 127] so that the int32 accumulation never meets -128 * -128 asymmetry), as onnxruntime does. With
`bits=7` (QuantizeConfig.weight_bits, for x86 without VNNI) the values are in [-63, 63] (scale max|W_c| / 63),
still stored as int8: AVX2's vpmaddubsw sums byte pairs in int16, which 7-bit weights cannot saturate.

Pre: weights are bound float32 constants (FoldConstant has run). Post: each op matched by a rule in `rules`,
and not excluded, reads `R.dequantize(W_q, scale[C], zero_point[C], axis=weight_channel_axis)` with W_q an int8
constant. Runs before InsertQDQ and FoldQDQToInt8. Layers are named as in `quant_rules.find_quantizable_layers`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from .quant_rules import RULES, QuantRule, constant_value, find_quantizable_layers, rebind

__all__ = ["QuantizeWeights", "quantize_per_channel"]


def quantize_per_channel(weight: np.ndarray, axis: int, bits: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """(int8 weight, float32 scale per channel along `axis`), symmetric, zero point 0."""
    qmax = 2 ** (bits - 1) - 1
    reduce_axes = tuple(i for i in range(weight.ndim) if i != axis % weight.ndim)
    absmax = np.abs(weight).max(axis=reduce_axes, keepdims=True) if reduce_axes else np.abs(weight)
    scale = np.where(absmax > 0, absmax / qmax, 1.0).astype(np.float32)
    quantized = np.clip(np.round(weight / scale), -qmax, qmax).astype(np.int8)
    return quantized, scale.reshape(-1)


@tvm.transform.module_pass(opt_level=0, name="tvmcompress.QuantizeWeights")
class QuantizeWeights:
    def __init__(self, exclude: Iterable[str] = (), rules: Mapping[str, QuantRule] = RULES, bits: int = 8):
        self.exclude = frozenset(exclude)
        self.rules = rules
        self.bits = bits

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        layers = find_quantizable_layers(mod, self.rules)
        skipped = {l.binding for l in layers if l.name in self.exclude or l.binding in self.exclude}
        rewriter = _WeightRewriter(mod, self.rules, skipped, self.bits)
        for gvar, func in mod.functions_items():
            if isinstance(func, relax.Function) and gvar.name_hint == "main":
                rewriter.builder_.update_func(gvar, rewriter.visit_expr(func))
        return rewriter.builder_.get()


@mutator
class _WeightRewriter(PyExprMutator):
    def __init__(self, mod: tvm.IRModule, rules: Mapping[str, QuantRule], skipped: set[str], bits: int):
        super().__init__(mod)
        self.rules = rules
        self.skipped = skipped
        self.bits = bits

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        call = binding.value
        rule = self.rules.get(call.op.name) if isinstance(call, relax.Call) and isinstance(call.op, tvm.ir.Op) else None
        if rule is None or binding.var.name in self.skipped or not rule.applies(call):
            return super().visit_var_binding_(binding)
        axis = rule.weight_channel_axis(call)
        weight_q, scale = quantize_per_channel(constant_value(call.args[rule.weight]), axis, self.bits)
        dequantized = self.builder_.emit(
            relax.op.dequantize(
                relax.const(weight_q, "int8"),
                relax.const(scale, "float32"),
                relax.const(np.zeros(scale.shape, np.int8), "int8"),
                axis=axis,
                out_dtype="float32",
            ),
            name_hint=f"{binding.var.name}_weight",
        )
        args = [self.visit_expr(a) for a in call.args]
        args[rule.weight] = dequantized
        rebind(self, binding.var, relax.Call(call.op, args, call.attrs))
