"""Gradients that TVM 0.27's `relax.transform.Gradient` lacks and our models need, and the check that says which
ops of a model still have none.

Registered in TVM's op attribute table (`FPrimalGradient`, the mechanism `Gradient` reads) by
`register_gradients()`, which `passes/distill.py` calls before differentiating: not at import, so importing
tvmcompress changes nothing in TVM. Level 11 puts ours above a future TVM's own level-10 rules only where TVM has
none (ours are registered only for ops without one).

    relax.clip(x, lo, hi)      dy * (lo <= x <= hi)                        (ReLU6, hard clamps)
    relax.nn.gelu(x)           dy * (Phi(x) + x phi(x)), Phi(x) = (1 + erf(x / sqrt 2)) / 2
    relax.nn.adaptive_avg_pool2d(x) to 1x1 (global average pooling):  broadcast(dy) / (H W)

Layer norm and batch norm need no rule: `relax.transform.DecomposeOpsForTraining` turns them into ops that have
one (mean, variance, subtract, divide, sqrt), which `distill` runs first.
"""

from __future__ import annotations

import math

import tvm
from tvm import relax
from tvm.relax.op.grad import no_grad

__all__ = ["register_gradients", "missing_gradients"]

_REGISTERED = False


def _clip_grad(orig_var, orig_call, output_grad, ctx):
    x, lo, hi = orig_call.args
    dtype = x.ty.dtype
    lo_c = relax.const(float(lo.value), dtype) if hasattr(lo, "value") else lo
    hi_c = relax.const(float(hi.value), dtype) if hasattr(hi, "value") else hi
    inside = relax.op.logical_and(relax.op.greater_equal(x, lo_c), relax.op.less_equal(x, hi_c))
    # Bounds are PrimValue attributes of the call, not trainable inputs.
    return [relax.op.where(inside, output_grad, relax.const(0.0, dtype)), no_grad(lo), no_grad(hi)]


def _gelu_grad(orig_var, orig_call, output_grad, ctx):
    x = orig_call.args[0]
    dtype = x.ty.dtype
    cdf = relax.op.multiply(relax.const(0.5, dtype), relax.op.add(
        relax.const(1.0, dtype), relax.op.erf(relax.op.multiply(x, relax.const(1.0 / math.sqrt(2.0), dtype)))))
    pdf = relax.op.multiply(relax.const(1.0 / math.sqrt(2.0 * math.pi), dtype),
                            relax.op.exp(relax.op.multiply(relax.op.multiply(x, x), relax.const(-0.5, dtype))))
    return [relax.op.multiply(output_grad, relax.op.add(cdf, relax.op.multiply(x, pdf)))]


def _global_avg_pool_grad(orig_var, orig_call, output_grad, ctx):
    x = orig_call.args[0]
    shape = [int(d) for d in x.ty.shape]
    attrs = orig_call.attrs
    out = [int(d) for d in orig_var.ty.shape]
    if str(attrs.layout) != "NCHW" or out[2:] != [1, 1]:
        raise tvm.error.InternalError(
            "distill: adaptive_avg_pool2d has a gradient only for global pooling (1x1 output, NCHW)")
    scale = relax.const(1.0 / (shape[2] * shape[3]), x.ty.dtype)
    return [relax.op.multiply(relax.op.broadcast_to(output_grad, relax.ShapeExpr(shape)), scale)]


_RULES = {
    "relax.clip": _clip_grad,
    "relax.nn.gelu": _gelu_grad,
    "relax.nn.adaptive_avg_pool2d": _global_avg_pool_grad,
}


def register_gradients() -> None:
    """Register the rules above for the ops that have no gradient yet (once per process)."""
    global _REGISTERED
    if _REGISTERED:
        return
    for name, rule in _RULES.items():
        if tvm.ir.Op.get(name).get_attr("FPrimalGradient") is None:
            relax.op.base.register_gradient(name, rule, level=11)
    _REGISTERED = True


def missing_gradients(func: relax.Function) -> list[str]:
    """Ops called in `func` (after DecomposeOpsForTraining) that Gradient cannot differentiate, sorted."""
    register_gradients()
    missing = set()

    def visit(expr):
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) \
                and expr.op.get_attr("FPrimalGradient") is None:
            missing.add(expr.op.name)

    relax.analysis.post_order_visit(func.body, visit)
    return sorted(missing)
