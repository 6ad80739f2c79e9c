"""QLinearMatMul and QLinearConv, which TVM 0.27 lacks, as integer kernels with onnx's reference rounding.

Both compute the int32 accumulator of the zero-point-shifted operands exactly, with the 8-bit operands fed to
the matmul / conv2d as they are (uint8/int8 x int8 -> int32, what our int8 schedules take) and the zero points
folded into int32 corrections (constant when the weight is a constant). The accumulator is then requantized as
onnx's reference does: scaled by a_scale * b_scale / y_scale (in the scales' type) in float64, rounded half to
even, shifted by y_zero_point and saturated. So the result is exact against the reference, and within one step
(a rounding tie) of onnxruntime, which requantizes in float32.
"""

from __future__ import annotations

import numpy as np
from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from ..errors import TvmcompressError
from .relax_helpers import const, constant_value, dtype_of, shape_of

R = relax.op


def round_half_to_even(bb, x):
    """np.rint for float64 values, spelled out so that it does not depend on how a backend lowers `round`."""
    dtype = dtype_of(x)
    up = bb.normalize(R.floor(R.add(x, const(0.5, dtype))))
    tie = R.equal(R.subtract(up, x), const(0.5, dtype))
    odd = R.not_equal(R.floor_mod(up, const(2, dtype)), const(0, dtype))
    return bb.normalize(R.where(R.logical_and(tie, odd), R.subtract(up, const(1, dtype)), up))


def requantize(bb, acc, multiplier, zero_point, out_dtype: str):
    """saturate(rint(acc * multiplier + zero_point)) in `out_dtype`, the arithmetic in float64 as the reference."""
    scaled = R.multiply(R.astype(acc, "float64"), R.astype(multiplier, "float64"))
    if zero_point is not None:
        scaled = R.add(scaled, R.astype(zero_point, "float64"))
    rounded = round_half_to_even(bb, bb.normalize(scaled))
    info = np.iinfo(out_dtype)
    return R.astype(R.clip(rounded, int(info.min), int(info.max)), out_dtype)


def _zero_point_value(zero_point) -> np.ndarray | None:
    """The zero point as int64 numpy (0 when absent), or None when it is not a constant."""
    if zero_point is None:
        return np.zeros((), np.int64)
    value = constant_value(zero_point)
    return None if value is None else value.astype(np.int64)


def shifted_constant_weight(weight, zero_point, channel_axis: int) -> np.ndarray | None:
    """weight - zero_point as an 8-bit numpy array (int8 if it fits, else the weight's own type when the zero
    point is 0), or None when either is not a constant or the shift fits no 8-bit type. `channel_axis`: where a
    per-channel zero point lies."""
    w, zp = constant_value(weight), _zero_point_value(zero_point)
    if w is None or zp is None:
        return None
    if zp.ndim == 1 and zp.size > 1:
        shape = [1] * w.ndim
        shape[channel_axis] = zp.size
        zp = zp.reshape(shape)
    shifted = w.astype(np.int64) - zp
    if shifted.min(initial=0) >= -128 and shifted.max(initial=0) <= 127:
        return shifted.astype(np.int8)
    if not np.any(zp):
        return w
    return None


def integer_matmul(bb, a, a_zero_point, b, b_zero_point):
    """(a - a_zp) @ (b - b_zp) in int32, a and b 8-bit; a_zp scalar or per row [M], b_zp scalar or per column
    [N]. The matmul itself reads the 8-bit tensors; the zero points become int32 corrections:
    A@B - a_zp * colsum(B) - rowsum(A) * b_zp + K * a_zp * b_zp."""
    k = shape_of(a)[-1]
    b_const = shifted_constant_weight(b, b_zero_point, -1)
    if b_const is not None:
        b, b_zero_point = relax.const(b_const, str(b_const.dtype)), None
    acc = bb.normalize(R.matmul(a, b, out_dtype="int32"))
    a_zp = _zp_int32(bb, a_zero_point, per_row=True)
    b_zp = _zp_int32(bb, b_zero_point, per_row=False)
    if a_zp is not None:
        if b_const is not None:
            colsum = relax.const(b_const.astype(np.int64).sum(axis=-2, keepdims=True).astype(np.int32), "int32")
        else:
            colsum = R.sum(R.astype(b, "int32"), axis=-2, keepdims=True)
        acc = R.subtract(acc, R.multiply(a_zp, colsum))
    if b_zp is not None:
        rowsum = R.sum(R.astype(a, "int32"), axis=-1, keepdims=True)
        acc = R.subtract(acc, R.multiply(rowsum, b_zp))
        if a_zp is not None:
            acc = R.add(acc, R.multiply(R.multiply(a_zp, b_zp), const(k, "int32")))
    return bb.normalize(acc)


def _zp_int32(bb, zero_point, per_row: bool):
    """A zero point as an int32 expression that broadcasts against the accumulator, None when it is 0."""
    if zero_point is None:
        return None
    value = constant_value(zero_point)
    if value is not None and not np.any(value):
        return None
    zp = bb.normalize(R.astype(zero_point, "int32"))
    if per_row and len(shape_of(zero_point)) == 1 and shape_of(zero_point)[0] > 1:
        zp = R.reshape(zp, [-1, 1])
    return bb.normalize(zp)


def conv_padding(attr: dict, spatial_in, kernel, strides, dilations) -> list[int]:
    """ONNX pads (begin..., end...) with auto_pad resolved."""
    auto_pad = attr.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
    n = len(spatial_in)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for size, k, s, d in zip(spatial_in, kernel, strides, dilations):
            out = -(-size // s)
            total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
            small, large = total // 2, total - total // 2
            begin.append(small if auto_pad == "SAME_UPPER" else large)
            end.append(large if auto_pad == "SAME_UPPER" else small)
        return begin + end
    if auto_pad == "VALID":
        return [0] * (2 * n)
    return [int(p) for p in attr.get("pads", [0] * (2 * n))]


def integer_conv2d(bb, x, x_zero_point, w, w_zero_point, attr: dict):
    """conv2d(x - x_zp, w - w_zp) in int32 (NCHW / OIHW), x 8-bit. With a constant x_zp and a constant weight the
    conv reads x and the shifted int8 weight as they are: padding inserts x_zp (the quantized 0) explicitly, and
    x_zp * sum(w[m]) is subtracted per output channel. Otherwise both are widened to int32 and shifted first."""
    x_shape, w_shape = shape_of(x), shape_of(w)
    if len(x_shape) != 4:
        raise TvmcompressError(
            f"a {len(x_shape) - 2}-D integer convolution is not supported (QLinearConv/ConvInteger are 2-D NCHW only): "
            "export it as a 2-D convolution (e.g. a 1-D one over [N, C, 1, W])"
        )
    kernel = [int(k) for k in attr.get("kernel_shape", w_shape[2:])]
    strides = [int(s) for s in attr.get("strides", [1, 1])]
    dilations = [int(d) for d in attr.get("dilations", [1, 1])]
    groups = int(attr.get("group", 1))
    pads = conv_padding(attr, x_shape[2:], kernel, strides, dilations)
    x_zp = _zero_point_value(x_zero_point)
    w_shifted = shifted_constant_weight(w, w_zero_point, 0)
    if x_zp is not None and x_zp.size == 1 and w_shifted is not None:
        zx = int(x_zp.reshape(()))
        padding = pads
        if zx != 0 and any(pads):
            x = R.nn.pad(x, [0, 0, 0, 0, pads[0], pads[2], pads[1], pads[3]], "constant", float(zx))
            padding = [0, 0, 0, 0]
        acc = bb.normalize(R.nn.conv2d(x, relax.const(w_shifted, str(w_shifted.dtype)), strides, padding, dilations,
                                       groups, out_dtype="int32"))
        if zx != 0:
            correction = zx * w_shifted.astype(np.int64).sum(axis=(1, 2, 3))
            acc = R.subtract(acc, relax.const(correction.astype(np.int32).reshape(1, -1, 1, 1), "int32"))
        return bb.normalize(acc)
    xi = R.astype(x, "int32")
    if x_zero_point is not None:
        xi = R.subtract(xi, R.astype(x_zero_point, "int32"))
    wi = R.astype(w, "int32")
    if w_zero_point is not None:
        w_zp = bb.normalize(R.astype(w_zero_point, "int32"))
        if len(shape_of(w_zero_point)) == 1 and shape_of(w_zero_point)[0] > 1:
            w_zp = R.reshape(w_zp, [-1, 1, 1, 1])
        wi = R.subtract(wi, w_zp)
    return bb.normalize(R.nn.conv2d(xi, wi, strides, pads, dilations, groups, out_dtype="int32"))


class QLinearMatMul(OnnxOpConverter):
    @classmethod
    def _impl_v10(cls, bb, inputs, attr, params):
        a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp = (list(inputs) + [None] * 8)[:8]
        product = integer_matmul(bb, a, a_zp, b, b_zp)
        if len(shape_of(a_scale)) == 1 and shape_of(a_scale)[0] > 1:
            a_scale = R.reshape(a_scale, [-1, 1])
        multiplier = R.divide(R.multiply(a_scale, b_scale), y_scale)  # in the scales' type, as the reference
        out_dtype = dtype_of(y_zp) if y_zp is not None else dtype_of(a)
        return requantize(bb, product, multiplier, y_zp, out_dtype)


class QLinearConv(OnnxOpConverter):
    """2-D only (NCHW); w_scale and w_zero_point per tensor or per output channel; the int32 bias B is added to
    the accumulator before requantization, as the spec says."""

    @classmethod
    def _impl_v10(cls, bb, inputs, attr, params):
        x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, bias = (list(inputs) + [None] * 9)[:9]
        acc = integer_conv2d(bb, x, x_zp, w, w_zp, attr)
        if bias is not None:
            acc = bb.normalize(R.add(acc, R.reshape(bb.normalize(R.astype(bias, "int32")), [1, -1, 1, 1])))
        if len(shape_of(w_scale)) == 1 and shape_of(w_scale)[0] > 1:
            w_scale = R.reshape(w_scale, [1, -1, 1, 1])
        multiplier = R.divide(R.multiply(x_scale, w_scale), y_scale)
        out_dtype = dtype_of(y_zp) if y_zp is not None else dtype_of(x)
        return requantize(bb, acc, multiplier, y_zp, out_dtype)
