"""LiftWeights: turn the weight constants of a lowered `main` into extra parameters (`compile --separate-weights`).

Pre: `main` is VM-ready (after the CPU pipeline), so every weight is already in the layout its kernel reads
(packing and folding happened while it was a constant). Post: each distinct constant of rank >= 1 in `main`
is replaced by a new parameter appended after the existing ones, in first-use order; `self.lifted` holds their
values in that order, which is the order of weights.bin. Lowered code passes weights as call arguments
(kernels, VM builtins) or tuple fields, which is where they are looked for. Scalars stay embedded (they are tiny and some VM
builtins want them inline). Runs last, after the pipeline's VMShapeLower: the new parameters get no runtime
shape checks, so their loaders (weights_file.read, the bundle's weights_reader.h) check dtype and shape.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.ir.expr import GenericConst
from tvm.relax.expr_functor import PyExprMutator, mutator


@tvm.transform.module_pass(opt_level=0, name="tvmcompress.LiftWeights")
class LiftWeights:
    def __init__(self):
        self.lifted: list[np.ndarray] = []

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        func = mod["main"]
        lifter = _ConstantLifter(mod)
        body = lifter.visit_expr(func.body)
        if not lifter.params:
            return mod
        self.lifted = [_tensor_of(constant).numpy() for constant in lifter.constants]
        lifted = relax.Function(
            [*func.params, *lifter.params], body, func.ret_ty, func.is_pure, func.attrs, func.span
        )
        functions = {gvar: (lifted if gvar.name_hint == "main" else f) for gvar, f in mod.functions_items()}
        return tvm.IRModule(functions, attrs=mod.attrs, global_infos=mod.global_infos)


def _tensor_of(expr: relax.Expr):
    """The tensor value of a Relax constant (0.27: `tvm.ir.GenericConst`, tensor in `.value`), else None."""
    if isinstance(expr, GenericConst) and hasattr(expr.value, "numpy"):
        return expr.value
    return None


@mutator
class _ConstantLifter(PyExprMutator):
    """Weights appear as arguments of calls (kernels, VM builtins) or tuple fields in lowered code."""

    def __init__(self, mod: tvm.IRModule):
        super().__init__(mod)
        self.constants: list[relax.Expr] = []
        self.params: list[relax.Var] = []

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        args = [self._lift(arg) for arg in call.args]
        if all(new.same_as(old) for new, old in zip(args, call.args)):
            return call
        return relax.Call(call.op, args, call.attrs, call.ty_args, call.span)  # 0.27: sinfo_args is ty_args

    def visit_tuple_(self, tup: relax.Tuple) -> relax.Expr:
        tup = super().visit_tuple_(tup)
        fields = [self._lift(field) for field in tup.fields]
        if all(new.same_as(old) for new, old in zip(fields, tup.fields)):
            return tup
        return relax.Tuple(fields, tup.span)

    def _lift(self, expr: relax.Expr) -> relax.Expr:
        tensor = _tensor_of(expr)
        if tensor is None or len(tensor.shape) == 0:
            return expr
        for constant, param in zip(self.constants, self.params):
            if constant.same_as(expr):  # one parameter for a constant used by several calls
                return param
        param = relax.Var(f"weight{len(self.params)}", expr.ty)  # 0.27: struct info is `.ty`
        self.constants.append(expr)
        self.params.append(param)
        return param
