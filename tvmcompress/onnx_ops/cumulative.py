"""CumProd (opset 26), which TVM 0.27's importer lacks: relax.cumprod along a constant axis, with ONNX's
`exclusive` (shift in a 1) and `reverse` (flip, scan, flip back)."""

from __future__ import annotations

from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from ..errors import TvmcompressError
from .relax_helpers import constant_value, shape_of

R = relax.op


class CumProd(OnnxOpConverter):
    first_opset = 26

    @classmethod
    def _impl_v26(cls, bb, inputs, attr, params):
        x = inputs[0]
        axis = constant_value(inputs[1])
        if axis is None:
            raise TvmcompressError("CumProd with an axis that is not a constant is not supported: make axis a constant")
        axis = int(axis.reshape(-1)[0])
        axis = axis + len(shape_of(x)) if axis < 0 else axis
        reverse, exclusive = bool(attr.get("reverse", 0)), bool(attr.get("exclusive", 0))
        if reverse:
            x = bb.normalize(R.flip(x, axis))
        out = bb.normalize(R.cumprod(x, axis=axis, exclusive=exclusive))
        return R.flip(out, axis) if reverse else out
