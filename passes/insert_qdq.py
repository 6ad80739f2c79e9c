"""InsertQDQ: wrap the calibrated activations of quantizable ops in quantize/dequantize.

Pre: `qparams` keys are Relax binding (or parameter) names, as `calibrate` returns them. Post: each op
matched by a rule in `rules`, not excluded, whose activation inputs all have table entries, consumes
`R.dequantize(R.quantize(x, s, z), s, z)` for each of them (per tensor, axis -1, dtype from QParams). An op with a
missing entry is left as it is. Runs after QuantizeWeights, before FoldQDQToInt8.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from .quant_rules import RULES, QuantRule, find_quantizable_layers, rebind
from .quantize_config import QParams

__all__ = ["InsertQDQ"]


@tvm.transform.module_pass(opt_level=0, name="tvmcompress.InsertQDQ")
class InsertQDQ:
    def __init__(
        self, qparams: Mapping[str, QParams], exclude: Iterable[str] = (), rules: Mapping[str, QuantRule] = RULES
    ):
        self.qparams = dict(qparams)
        self.exclude = frozenset(exclude)
        self.rules = rules

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        # `exclude` may name layers by alias ("conv2d_1") or binding ("lv9"); find_quantizable_layers sees only
        # layers whose weight is still float, so after QuantizeWeights aliases resolve through the binding names.
        skipped = {l.binding for l in find_quantizable_layers(mod, self.rules) if l.name in self.exclude}
        rewriter = _QDQRewriter(mod, self.qparams, self.rules, skipped | set(self.exclude))
        for gvar, func in mod.functions_items():
            if isinstance(func, relax.Function) and gvar.name_hint == "main":
                rewriter.builder_.update_func(gvar, rewriter.visit_expr(func))
        return rewriter.builder_.get()


def quantize_dequantize(builder: relax.BlockBuilder, x: relax.Expr, qp: QParams) -> relax.Var:
    scale, zero_point = relax.const(qp.scale, "float32"), relax.const(qp.zero_point, qp.dtype)
    name = x.name if isinstance(x, relax.Var) else "act"
    q = builder.emit(relax.op.quantize(x, scale, zero_point, axis=-1, out_dtype=qp.dtype), name_hint=f"{name}_q")
    return builder.emit(
        relax.op.dequantize(q, scale, zero_point, axis=-1, out_dtype="float32"), name_hint=f"{name}_dq"
    )


@mutator
class _QDQRewriter(PyExprMutator):
    def __init__(self, mod, qparams: dict[str, QParams], rules: Mapping[str, QuantRule], skipped: set[str]):
        super().__init__(mod)
        self.qparams = qparams
        self.rules = rules
        self.skipped = skipped

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        call = binding.value
        rule = self.rules.get(call.op.name) if isinstance(call, relax.Call) and isinstance(call.op, tvm.ir.Op) else None
        if rule is None or binding.var.name in self.skipped:
            return super().visit_var_binding_(binding)
        acts = [call.args[i] for i in rule.activations]
        entries = [self.qparams.get(a.name) if isinstance(a, relax.Var) else None for a in acts]
        if any(qp is None for qp in entries) or str(call.attrs.out_dtype) not in ("None", "", "void", "float32"):
            return super().visit_var_binding_(binding)
        args = [self.visit_expr(a) for a in call.args]
        for index, qp in zip(rule.activations, entries):
            args[index] = quantize_dequantize(self.builder_, args[index], qp)
        rebind(self, binding.var, relax.Call(call.op, args, call.attrs))
