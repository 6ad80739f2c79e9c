"""QLinearMatMul, which TVM 0.27 lacks, computed as onnx's reference does: an int32 matmul of the zero-point-
shifted operands, scaled by a_scale * b_scale / y_scale (in the scales' type), then rounded half to even,
shifted by y_zero_point and saturated."""

from __future__ import annotations

import numpy as np
from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from .relax_helpers import const, dtype_of, shape_of

R = relax.op


def round_half_to_even(bb, x):
    """np.rint for float64 values: TVM's round goes half away from zero."""
    dtype = dtype_of(x)
    up = bb.normalize(R.floor(R.add(x, const(0.5, dtype))))
    tie = R.equal(R.subtract(up, x), const(0.5, dtype))
    odd = R.not_equal(R.floor_mod(up, const(2, dtype)), const(0, dtype))
    return bb.normalize(R.where(R.logical_and(tie, odd), R.subtract(up, const(1, dtype)), up))


def _shifted(bb, x, zero_point, per_row: bool):
    x = R.astype(x, "int32")
    if zero_point is None:
        return bb.normalize(x)
    zp = R.astype(zero_point, "int32")
    if per_row and len(shape_of(zero_point)) == 1 and shape_of(zero_point)[0] > 1:
        zp = R.reshape(zp, [-1, 1])  # a's zero point per row
    return bb.normalize(R.subtract(x, zp))


class QLinearMatMul(OnnxOpConverter):
    @classmethod
    def _impl_v10(cls, bb, inputs, attr, params):
        a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp = (list(inputs) + [None] * 8)[:8]
        product = bb.normalize(R.matmul(_shifted(bb, a, a_zp, True), _shifted(bb, b, b_zp, False),
                                        out_dtype="int32"))
        if len(shape_of(a_scale)) == 1 and shape_of(a_scale)[0] > 1:
            a_scale = R.reshape(a_scale, [-1, 1])
        multiplier = R.divide(R.multiply(a_scale, b_scale), y_scale)  # in the scales' type, as the reference
        scaled = R.multiply(R.astype(product, "float64"), R.astype(multiplier, "float64"))
        out_dtype = dtype_of(y_zp) if y_zp is not None else dtype_of(a)
        if y_zp is not None:
            scaled = R.add(scaled, R.astype(y_zp, "float64"))
        rounded = round_half_to_even(bb, bb.normalize(scaled))
        info = np.iinfo(out_dtype)
        return R.astype(R.clip(rounded, int(info.min), int(info.max)), out_dtype)
