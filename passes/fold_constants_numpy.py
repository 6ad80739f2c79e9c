"""FoldConstantsNumpy: evaluate elementwise and layout ops on constants with numpy, at compile time.

Relax's FoldConstant legalizes every foldable call and JIT-compiles the PrimFunc with LLVM, one build per
distinct shape. A decomposed BatchNorm leaves `sqrt(var + eps)`, `gamma / ...` and friends per layer, and
ConvertLayout a `permute_dims` per conv weight: measured on MobileNetV2 (52 convs), FoldConstant made 713 LLVM
builds and took 41 of the 42 s of the CPU pipeline's lowering. numpy does the same arithmetic in milliseconds.

Folded: calls of the ops in `_ELEMENTWISE` / `_PREDICATES` / `_LAYOUT` whose arguments are all constants (directly, or through a
variable bound to one), with a static output shape, when the output is no larger than the inputs together (a
broadcast that would materialize a big constant from a small one is left alone). Float arithmetic only; layout
ops any dtype. Every argument that is a variable bound to a constant is replaced by that constant, so later
passes (the packed-weight legalization) see `Constant` weights; unused bindings are then removed.

Pre: none. Post: no call of a listed op has only constant arguments (within the size rule); what numpy cannot
fold is left for FoldConstant. Numerics: numpy's float32 IEEE arithmetic, as the LLVM build computes it
(sqrt and divide are correctly rounded in both; exp/log may differ in the last ulp).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tvm
from tvm import relax, tirx
from tvm.ir.expr import Constant
from tvm.relax.expr_functor import PyExprMutator, mutator

__all__ = ["FoldConstantsNumpy", "fold_constants"]

_ELEMENTWISE: dict[str, Callable[..., np.ndarray]] = {
    "relax.add": np.add,
    "relax.subtract": np.subtract,
    "relax.multiply": np.multiply,
    "relax.divide": np.divide,
    "relax.maximum": np.maximum,
    "relax.minimum": np.minimum,
    "relax.sqrt": np.sqrt,
    "relax.rsqrt": lambda x: np.reciprocal(np.sqrt(x)),
    "relax.negative": np.negative,
    "relax.abs": np.abs,
}
# Ops whose argument dtypes differ from the output's: the importer's Clip guards its bounds with these.
_PREDICATES: dict[str, Callable[..., np.ndarray]] = {"relax.isnan": np.isnan, "relax.where": np.where}
# Ops that only move or reinterpret data: the output shape comes from the call's type.
_LAYOUT = ("relax.reshape", "relax.expand_dims", "relax.squeeze", "relax.flatten", "relax.permute_dims",
           "relax.astype")
_FLOATS = ("float16", "float32", "float64")


def _static_shape(sinfo) -> tuple[int, ...] | None:
    if not isinstance(sinfo, relax.TensorType) or sinfo.shape is None:
        return None
    dims = sinfo.shape.values
    if not all(isinstance(d, tirx.IntImm) for d in dims):
        return None
    return tuple(int(d) for d in dims)


@tvm.transform.module_pass(opt_level=0, name="tvmcompress.FoldConstantsNumpy")
class FoldConstantsNumpy:
    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        rewriter = _Folder(mod)
        for gvar, func in mod.functions_items():
            if isinstance(func, relax.Function):
                rewriter.builder_.update_func(gvar, rewriter.visit_expr(func))
        return relax.transform.DeadCodeElimination()(rewriter.builder_.get())


@mutator
class _Folder(PyExprMutator):
    def _constant(self, expr: relax.Expr) -> Constant | None:
        if isinstance(expr, Constant):
            return expr
        if isinstance(expr, relax.Var):
            bound = self.lookup_binding(expr)
            if isinstance(bound, Constant):
                return bound
        return None

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if not isinstance(call.op, tvm.ir.Op):
            return call
        out_type = call.ty  # a rebuilt Call has no type until normalized
        constants = [self._constant(a) for a in call.args]
        if any(c is not None and not isinstance(a, Constant) for a, c in zip(call.args, constants)):
            args = [c if c is not None else a for a, c in zip(call.args, constants)]
            call = relax.Call(call.op, args, call.attrs, call.ty_args, call.span)
        folded = self._fold(call, out_type)
        return folded if folded is not None else call

    def _fold(self, call: relax.Call, out_type) -> Constant | None:
        name = call.op.name
        if name not in _ELEMENTWISE and name not in _LAYOUT and name not in _PREDICATES:
            return None
        out_shape = _static_shape(out_type)
        if out_shape is None:
            return None
        out_dtype = str(out_type.dtype)
        # reshape's second argument is a shape, not data; the output shape says it all.
        data_args = call.args[:1] if name in _LAYOUT else call.args
        if not all(isinstance(a, Constant) for a in data_args):
            return None
        values = [a.value.numpy() for a in data_args]
        if int(np.prod(out_shape)) > sum(v.size for v in values):
            return None
        if name in _ELEMENTWISE:
            if out_dtype not in _FLOATS or any(str(v.dtype) != out_dtype for v in values):
                return None
            with np.errstate(all="ignore"):
                result = _ELEMENTWISE[name](*values)
        elif name == "relax.isnan":
            if str(values[0].dtype) not in _FLOATS:
                return None
            result = np.isnan(values[0])
        elif name == "relax.where":
            if values[0].dtype != np.bool_ or any(str(v.dtype) != out_dtype for v in values[1:]):
                return None
            result = np.where(*values)
        elif name == "relax.permute_dims":
            axes = call.attrs.axes
            result = np.transpose(values[0], None if axes is None else [int(a) for a in axes])
        elif name == "relax.astype":
            source = str(values[0].dtype)
            if source not in _FLOATS or out_dtype not in _FLOATS:
                return None  # float -> int rounding and saturation rules are TVM's, not numpy's
            result = values[0].astype(out_dtype)
        else:
            result = values[0].reshape(out_shape)
        # NOTE: not np.ascontiguousarray, which turns a 0-d result into shape (1,).
        result = np.array(result, dtype=out_dtype, order="C")
        if result.shape != out_shape:
            return None
        return relax.const(result, out_dtype)


def fold_constants() -> tvm.transform.Pass:
    """numpy folding first, then Relax's FoldConstant for whatever numpy does not cover (it compiles each)."""
    return tvm.transform.Sequential([FoldConstantsNumpy(), relax.transform.FoldConstant()], name="tvmcompress.FoldConstants")
