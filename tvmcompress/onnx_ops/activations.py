"""Activations that TVM 0.27 lacks (Celu, SwiGLU) or builds with float32 constants, so that float16 and bfloat16
inputs fail to import (Elu: "Binary operators must have the same dtype"). Constants take the input's dtype."""

from __future__ import annotations

from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from .relax_helpers import const, dtype_of

R = relax.op


def _elu(x: relax.Expr, alpha: float) -> relax.Expr:
    dtype = dtype_of(x)
    # float16 / bfloat16 in float32, rounded once, as onnx's reference computes: exp(x) - 1 cancels for small x,
    # so one ulp of a float16 exp is 0.4% of the result.
    wide = "float32" if dtype in ("float16", "bfloat16") else dtype
    xw = R.astype(x, wide) if wide != dtype else x
    zero = const(0, wide)
    out = R.where(R.greater(xw, zero), xw, R.multiply(const(alpha, wide), R.subtract(R.exp(xw), const(1, wide))))
    return R.astype(out, dtype) if wide != dtype else out


class Elu(OnnxOpConverter):
    """x for x > 0, else alpha * (exp(x) - 1)."""

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        return _elu(inputs[0], float(attr.get("alpha", 1.0)))


class Celu(OnnxOpConverter):
    """max(0, x) + min(0, alpha * (exp(x / alpha) - 1)), which is alpha * Elu(x / alpha) with Elu's alpha 1."""

    @classmethod
    def _impl_v12(cls, bb, inputs, attr, params):
        x = inputs[0]
        alpha = float(attr.get("alpha", 1.0))
        dtype = dtype_of(x)
        return R.multiply(const(alpha, dtype), _elu(bb.normalize(R.divide(x, const(alpha, dtype))), 1.0))


class SwiGLU(OnnxOpConverter):
    """Swish_alpha(A) * B = A * sigmoid(alpha * A) * B (opset 28; A and B have one shape)."""

    first_opset = 28

    @classmethod
    def _impl_v28(cls, bb, inputs, attr, params):
        gate, value = inputs[0], inputs[1]
        alpha = float(attr.get("alpha", 1.0))
        swish = R.multiply(gate, R.sigmoid(R.multiply(gate, const(alpha, dtype_of(gate)))))
        return R.multiply(swish, value)
