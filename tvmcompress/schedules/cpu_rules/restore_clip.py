"""RestoreScalarMinMax: turn the ONNX importer's pre-legalized Clip back into Relax ops.

TVM 0.27's ONNX frontend emits Clip as `call_tir(maximum|minimum, (x, c))` with a one-element
constant c. ConvertLayout cannot see into call_tir, so in an NHWC graph each ReLU6 became
transpose -> max -> min -> transpose, an extra kernel and memory pass per activation, and it cut
the activation out of the conv epilogue. Pre: weights are bound constants. Post: every such call is
`R.maximum(x, c)` / `R.minimum(x, c)` with c a 0-d constant; other call_tir are left untouched.
"""

from __future__ import annotations

import tvm
import tvm_ffi
from tvm import relax, tirx
from tvm.ir import TensorLoad
from tvm.ir.expr import Constant
from tvm.relax.expr_functor import PyExprMutator, mutator

_CALL_TIR = tvm.ir.Op.get("relax.call_tir")


def _scalar_min_max_kind(func: tirx.PrimFunc) -> str | None:
    """'max' or 'min' when the PrimFunc is one store of max/min(x[idx], c[0]), else None."""
    found: list[str] = []

    def visit(node):
        value = node.value
        if isinstance(value, tirx.Max):
            found.append("max")
        elif isinstance(value, tirx.Min):
            found.append("min")
        else:
            found.append("other")
            return
        a, b = value.a, value.b
        if not (isinstance(a, TensorLoad) and isinstance(b, TensorLoad) and len(b.indices) == 1
                and isinstance(b.indices[0], tirx.IntImm) and int(b.indices[0]) == 0):
            found.append("other")

    tvm_ffi.structural_walk(func.body, [(tirx.BufferStore, visit)], order="post")
    return found[0] if found in (["max"], ["min"]) else None


@tvm.transform.module_pass(opt_level=0, name="tvmcompress.RestoreScalarMinMax")
class RestoreScalarMinMax:
    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        rewriter = _Rewriter(mod)
        for gvar, func in mod.functions_items():
            if isinstance(func, relax.Function):
                rewriter.builder_.update_func(gvar, rewriter.visit_expr(func))
        return relax.transform.DeadCodeElimination()(rewriter.builder_.get())


@mutator
class _Rewriter(PyExprMutator):
    def __init__(self, mod: tvm.IRModule):
        super().__init__(mod)
        self.mod = mod

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if not call.op.same_as(_CALL_TIR):
            return call
        args = call.args[1].fields if isinstance(call.args[1], relax.Tuple) else []
        if len(args) != 2 or not isinstance(args[1], Constant) or args[1].value.numpy().size != 1:
            return call
        callee = self.mod[call.args[0]] if call.args[0] in self.mod.get_global_vars() else None
        kind = _scalar_min_max_kind(callee) if isinstance(callee, tirx.PrimFunc) else None
        if kind is None:
            return call
        scalar = args[1].value.numpy().reshape(())
        op = relax.op.maximum if kind == "max" else relax.op.minimum
        return op(args[0], relax.const(scalar, str(scalar.dtype)))
