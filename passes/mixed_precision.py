"""MixedPrecision: run conv2d/matmul (and what TVM's AMP keeps with them) in float16 or bfloat16.

float16 is TVM's own `relax.transform.ToMixedPrecision` (checked on 0.27): inputs and weights of conv2d/matmul
are cast to float16, the ops accumulate in float32 (`out_dtype="float32"`), and ops that follow them stay in
float16 where its policy allows. TVM's pass knows only float16, so bfloat16 reuses the same decisions and
renames the low-precision dtype: every `astype(., "float16")` becomes `astype(., "bfloat16")`; the types of the
ops between casts follow from their inputs. FoldConstant then stores the cast weights in the low precision.

Pre: float32 module, weights bound as constants. Post: the signature of `main` is unchanged (float32 in/out).
"""

from __future__ import annotations

from typing import Literal

import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from .fold_constants_numpy import fold_constants

__all__ = ["MixedPrecision"]

_ASTYPE = tvm.ir.Op.get("relax.astype")


@tvm.transform.module_pass(opt_level=0, name="tvmcompress.MixedPrecision")
class MixedPrecision:
    def __init__(self, dtype: Literal["float16", "bfloat16"] = "float16"):
        if dtype not in ("float16", "bfloat16"):
            raise ValueError(f"MixedPrecision dtype must be float16 or bfloat16, got {dtype!r}")
        self.dtype = dtype

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        mod = relax.transform.ToMixedPrecision(out_dtype="float32")(mod)
        if self.dtype == "bfloat16":
            rewriter = _RetargetCasts(mod, "float16", "bfloat16")
            for gvar, func in mod.functions_items():
                if isinstance(func, relax.Function):
                    rewriter.builder_.update_func(gvar, rewriter.visit_expr(func))
            mod = rewriter.builder_.get()
        return fold_constants()(mod)


@mutator
class _RetargetCasts(PyExprMutator):
    def __init__(self, mod: tvm.IRModule, old: str, new: str):
        super().__init__(mod)
        self.old, self.new = old, new

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if call.op.same_as(_ASTYPE) and str(call.attrs.dtype) == self.old:
            return relax.op.astype(call.args[0], self.new)
        return call
