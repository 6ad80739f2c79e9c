"""PropagateNaN: float max/min in every PrimFunc return NaN when an operand is NaN, as ONNX (and onnxruntime,
and numpy.maximum) do for Relu, Clip, Max and Min.

TIR's `max(a, b)` compiles to `a > b ? a : b` (x86 maxps, AArch64 fmax on ordered compares), which is false for
a NaN `a`: Relu(NaN) = max(NaN, 0) gave 0, Clip(NaN) gave its low bound, Max(NaN, y) gave y, and a NaN weight
came out as finite, confident logits. The rewrite, per float max/min (min symmetric):

    max(a, c), c a constant that is not NaN  ->  (a < c) ? c : a                      a NaN: the compare is false
    max(a, b)                                ->  isnan(a) ? a : ((a > b) ? a : b)     b NaN: a > b is false

The first form is a compare and a blend (or maxps with the constant first). The second is TIR's own max (LLVM
emits maxps for `a > b ? a : b`) plus an unordered compare and a blend, only where both operands vary (Max/Min
of two tensors, max pooling, the max of softmax). Operands that hold a Select (nested clips) are bound once
with a Let, so nested clips stay linear; other operands are repeated. No Max/Min is left, so the pass is idempotent.

Pre: scheduled (or unscheduled) PrimFuncs. Post: no float Max/Min whose result drops a NaN operand. Runs after
the schedules (cpu_pipeline), which pattern-match TIR max/min (restore_clip.py), and before TVM's lowering.
"""

from __future__ import annotations

import math

import tvm
import tvm_ffi
from tvm import tirx

_SIMPLE = (tvm.ir.expr.TensorLoad, tirx.Var)  # operands cheap enough to repeat instead of binding with a Let


def _is_float(expr) -> bool:
    return str(expr.ty).startswith(("float", "bfloat"))


def _is_number(expr) -> bool:
    return isinstance(expr, tirx.FloatImm) and not math.isnan(expr.value)


# Operands with up to this many Selects (nested clips, clamps, the clamps of an inlined exp) are repeated rather than bound with a Let: LLVM
# computes them once, and a Let inside a vectorized loop can be refused by TVM's Vectorizer ("Let cannot bind the
# same var to two different values", fuzz seed 536: Mul(Elu(c), c) of a Concat c, whose exp clamps its input).
# Deeper operands keep the Let, so that long chains of clips stay linear in size.
_INLINE_SELECTS = 64


def _selects(expr) -> int:
    found = []

    def note(node):
        found.append(node)
        return node

    tvm_ffi.structural_map(expr, [((tirx.Select,), note)], order="post")
    return len(found)


def _propagating(expr):
    if not _is_float(expr):
        return expr
    a, b = expr.a, expr.b
    if _is_number(a):  # max is commutative; keep the constant second
        a, b = b, a
    is_max = isinstance(expr, tirx.Max)
    bound = None if isinstance(a, _SIMPLE) or _selects(a) <= _INLINE_SELECTS else tirx.Var("nan_operand", expr.ty)
    x = a if bound is None else bound
    if _is_number(b):
        result = tirx.Select(tirx.LT(x, b) if is_max else tirx.GT(x, b), b, x)
    else:
        wins = tirx.GT(x, b) if is_max else tirx.LT(x, b)
        # TVM's isnan takes no bfloat16 (op.cc): test the value widened to float32, which keeps a NaN a NaN.
        dtype = str(expr.ty)
        test = tirx.Cast(dtype.replace("bfloat16", "float32"), x) if dtype.startswith("bfloat") else x
        result = tirx.Select(tirx.isnan(test), x, tirx.Select(wins, x, b))
    return result if bound is None else tirx.Let(bound, a, result)


def propagate_nan(func: tirx.PrimFunc) -> tirx.PrimFunc:
    """`func` with every float max/min rewritten as the module docstring says (innermost first)."""
    return tvm_ffi.structural_map(func, [((tirx.Max, tirx.Min), _propagating)], order="post")


@tvm.transform.module_pass(opt_level=0, name="tvmcompress.PropagateNaN")
class PropagateNaN:
    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        updated = {gvar: propagate_nan(func) for gvar, func in mod.functions_items() if isinstance(func, tirx.PrimFunc)}
        changed = {gvar: func for gvar, func in updated.items() if not func.same_as(mod[gvar])}
        if not changed:
            return mod
        mod = mod.clone()
        for gvar, func in changed.items():
            mod.update_func(gvar, func)
        return mod
