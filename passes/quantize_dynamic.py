"""QuantizeDynamic: int8 conv2d/matmul with activation scales computed at run time (no calibration).

For each op matched by a rule in `rules` (float activation, float constant weight), not excluded:

    s_x = max(max|x|, tiny) / 127                                    # per tensor, per call, in the graph
    acc = op(quantize(x, s_x, 0), W_q, out_dtype="int32")           # int8 x int8 -> int32
    y   = astype(acc, "float32") * (s_x * s_w[C])

Weights are quantized symmetric per output channel as in QuantizeWeights. Activations are symmetric (zero
point 0): with a run-time zero point, conv padding and the zero-point correction would need run-time
constants too; symmetric int8 keeps the integer op exactly the static one. The cost is one bit of resolution
for non-negative activations (post-ReLU), which is why static int8 (calibrated, asymmetric) is the default.

Pre: weights are bound float32 constants (prepare_for_quantization ran). Post: every matched op computes in
int8 x int8 -> int32; the module's signature is unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from .quant_rules import RULES, QuantRule, constant_value, find_quantizable_layers, rebind
from .quantize_weights import quantize_per_channel

__all__ = ["QuantizeDynamic"]

_TINY = 1e-8  # an all-zero activation still gets a valid scale


@tvm.transform.module_pass(opt_level=0, name="tvmcompress.QuantizeDynamic")
class QuantizeDynamic:
    def __init__(self, exclude: Iterable[str] = (), rules: Mapping[str, QuantRule] = RULES):
        self.exclude = frozenset(exclude)
        self.rules = rules

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        layers = find_quantizable_layers(mod, self.rules)
        selected = {l.binding for l in layers if l.name not in self.exclude and l.binding not in self.exclude}
        rewriter = _DynamicRewriter(mod, self.rules, selected)
        for gvar, func in mod.functions_items():
            if isinstance(func, relax.Function) and gvar.name_hint == "main":
                rewriter.builder_.update_func(gvar, rewriter.visit_expr(func))
        return rewriter.builder_.get()


@mutator
class _DynamicRewriter(PyExprMutator):
    def __init__(self, mod: tvm.IRModule, rules: Mapping[str, QuantRule], selected: set[str]):
        super().__init__(mod)
        self.rules = rules
        self.selected = selected

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        call = binding.value
        if binding.var.name not in self.selected:
            return super().visit_var_binding_(binding)
        rule = self.rules[call.op.name]
        (act_index,) = rule.activations
        x = self.visit_expr(call.args[act_index])
        w_axis = rule.weight_channel_axis(call)
        w_q, s_w = quantize_per_channel(constant_value(call.args[rule.weight]), w_axis)
        name = binding.var.name
        emit = self.builder_.emit
        abs_max = emit(relax.op.max(relax.op.abs(x)), name_hint=f"{name}_absmax")
        scale = emit(
            relax.op.maximum(relax.op.divide(abs_max, relax.const(127.0, "float32")), relax.const(_TINY, "float32")),
            name_hint=f"{name}_scale",
        )
        x_q = emit(relax.op.quantize(x, scale, relax.const(0, "int8"), axis=-1, out_dtype="int8"), name_hint=f"{name}_q")
        if call.op.name == "relax.nn.conv2d":
            attrs = call.attrs
            acc = relax.op.nn.conv2d(
                x_q, relax.const(w_q, "int8"), attrs.strides, attrs.padding, attrs.dilation, attrs.groups,
                attrs.data_layout, attrs.kernel_layout, attrs.out_layout, out_dtype="int32",
            )
        else:
            acc = relax.op.matmul(x_q, relax.const(w_q, "int8"), out_dtype="int32")
        acc = emit(acc, name_hint=f"{name}_acc")
        out_ndim = len(call.ty.shape)
        broadcast = [1] * out_ndim
        broadcast[rule.output_channel_axis(call) % out_ndim] = s_w.size
        channel_scale = relax.op.multiply(scale, relax.const(s_w.reshape(broadcast).astype(np.float32), "float32"))
        rebind(self, binding.var, relax.op.multiply(relax.op.astype(acc, "float32"), channel_scale))
