"""int8 NHWC conv2d as a dot-product compute on a packed weight: what `Int8DotProduct` tensorizes.

An int8 x int8 -> int32 conv2d (FoldQDQToInt8's output) with NHWC data and a constant weight is a reduction over
kh, kw and the input channels; grouping the channels by 4 makes it the same L-lane x 4-byte dot product as the
int8 matmul. The weight is packed with numpy at compile time into [ceil(O/L), KH, KW, C4/4, L, 4] (C4: the input
channels rounded up to a multiple of 4; padded channels and output channels are zero), and the block computes

    out[n, y, x, o] = sum_{kh, kw, co, ci} pad[n, y*sh + kh*dh, x*sw + kw*dw, 4 co + ci]
                                          * Wp[o / L, kh, kw, co, o % L, ci]

`pad` is a separate block (spatial zero padding plus the input channels rounded up to 4) that the rule schedules
as its own loop nest; it is absent when there is neither.

Depthwise int8 convolutions (no reduction over channels, so no dot product) get the float path's packed compute
with int32 accumulation instead: weight [KH, KW, C], block annotated `depthwise_conv2d_nhwc`, which the
DepthwiseConv2D rule vectorizes over channels (8 int32 lanes on AVX2). Other grouped convolutions fall through.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax, te, tirx

from .cpu_rules.packed_compute import DEPTHWISE_PACKED, SCHEDULE_KEY, _static_shape, _to_oihw
from .int8_intrinsics import REDUCE, DotIntrin, pairs_fit_int16

__all__ = ["INT8_CONV2D", "conv2d_fits", "legalize_int8_conv2d", "legalize_int8_depthwise", "pack_conv_weight"]

INT8_CONV2D = "int8_conv2d_nhwc"


def pack_conv_weight(w_oihw: np.ndarray, lanes: int) -> np.ndarray:
    """[O, C, KH, KW] int8 -> [ceil(O/lanes), KH, KW, ceil(C/4), lanes, 4], zero-padded."""
    out_c, in_c, kh, kw = w_oihw.shape
    blocks, groups = -(-out_c // lanes), -(-in_c // REDUCE)
    padded = np.zeros((blocks * lanes, groups * REDUCE, kh, kw), np.int8)
    padded[:out_c, :in_c] = w_oihw
    # [Ob, L, Cg, 4, KH, KW] -> [Ob, KH, KW, Cg, L, 4]
    return np.ascontiguousarray(padded.reshape(blocks, lanes, groups, REDUCE, kh, kw).transpose(0, 4, 5, 2, 1, 3))


def _pad_data(data: te.Tensor, padding: tuple[int, int, int, int], channels: int) -> te.Tensor:
    top, left, bottom, right = padding
    n, h, w, c = (int(d) for d in data.shape)
    if not any(padding) and channels == c:
        return data
    zero = tirx.const(0, data.dtype)

    def fpad(i_n, i_h, i_w, i_c):
        inside = tirx.all(i_h >= top, i_h < h + top, i_w >= left, i_w < w + left, i_c < c)
        return tirx.if_then_else(inside, data[i_n, i_h - top, i_w - left, i_c], zero)

    return te.compute((n, h + top + bottom, w + left + right, channels), fpad, name="int8_conv2d_pad")


def _int8_conv2d(data, packed, strides, padding, dilation, out_channels):
    n, h, w, c = (int(d) for d in data.shape)
    blocks, kh, kw, groups, lanes, _ = (int(d) for d in packed.shape)
    (sh, sw), (dh, dw) = strides, dilation
    top, left, bottom, right = padding
    oh = (h + top + bottom - (kh - 1) * dh - 1) // sh + 1
    ow = (w + left + right - (kw - 1) * dw - 1) // sw + 1
    padded = _pad_data(data, padding, groups * REDUCE)
    rkh, rkw = te.reduce_axis((0, kh), "rkh"), te.reduce_axis((0, kw), "rkw")
    rco, rci = te.reduce_axis((0, groups), "rco"), te.reduce_axis((0, REDUCE), "rci")
    out = te.compute(
        (n, oh, ow, blocks * lanes),
        lambda b, y, x, o: te.sum(
            padded[b, y * sh + rkh * dh, x * sw + rkw * dw, rco * REDUCE + rci].astype("int32")
            * packed[o // lanes, rkh, rkw, rco, o % lanes, rci].astype("int32"),
            axis=[rkh, rkw, rco, rci],
        ),
        name=INT8_CONV2D,
        attrs={SCHEDULE_KEY: INT8_CONV2D},
    )
    if blocks * lanes == out_channels:
        return out
    return te.compute((n, oh, ow, out_channels), lambda *i: out[i], name=f"{INT8_CONV2D}_slice")


def conv2d_fits(call: relax.Call, intrin: DotIntrin) -> bool:
    """Whether `call` is an int8 conv2d this legalization handles for `intrin` (weight not yet checked for
    int16 pairs)."""
    attrs = call.attrs
    data, weight = call.args
    shape = _static_shape(data)
    return (
        isinstance(weight, tvm.ir.expr.Constant)
        and shape is not None
        and str(attrs.data_layout) == "NHWC"
        and str(attrs.out_layout or attrs.data_layout) == "NHWC"
        and int(attrs.groups) == 1
        and str(data.ty.dtype) == intrin.activation_dtype
        and str(weight.ty.dtype) == "int8"
        and str(attrs.out_dtype) == "int32"
    )


def legalize_int8_conv2d(bb: relax.BlockBuilder, call: relax.Call, intrin: DotIntrin) -> relax.Expr | None:
    """The packed compute for `call`, or None when it does not fit (the caller legalizes it otherwise)."""
    if not conv2d_fits(call, intrin):
        return None
    attrs = call.attrs
    w_oihw = _to_oihw(call.args[1].value.numpy(), str(attrs.kernel_layout))
    packed = pack_conv_weight(w_oihw, intrin.lanes)
    if intrin.int16_pairs and not pairs_fit_int16(packed, intrin.activation_dtype):
        return None  # an 8-bit weight would saturate vpmaddubsw: the exact (slower) path instead
    return bb.call_te(
        _int8_conv2d, call.args[0], relax.const(packed, "int8"),
        tuple(int(s) for s in attrs.strides), tuple(int(p) for p in attrs.padding),
        tuple(int(d) for d in attrs.dilation), int(w_oihw.shape[0]),
        primfunc_name_hint="int8_conv2d_nhwc",
    )


def _int8_depthwise(data, packed, strides, padding, dilation):
    n, h, w, c = (int(d) for d in data.shape)
    kh, kw, _ = (int(d) for d in packed.shape)
    (sh, sw), (dh, dw) = strides, dilation
    top, left, bottom, right = padding
    oh = (h + top + bottom - (kh - 1) * dh - 1) // sh + 1
    ow = (w + left + right - (kw - 1) * dw - 1) // sw + 1
    padded = _pad_data(data, padding, c)
    rkh, rkw = te.reduce_axis((0, kh), "rkh"), te.reduce_axis((0, kw), "rkw")
    return te.compute(
        (n, oh, ow, c),
        lambda b, y, x, o: te.sum(
            padded[b, y * sh + rkh * dh, x * sw + rkw * dw, o].astype("int32") * packed[rkh, rkw, o].astype("int32"),
            axis=[rkh, rkw],
        ),
        name="int8_depthwise_conv2d_nhwc",
        attrs={SCHEDULE_KEY: DEPTHWISE_PACKED},
    )


def legalize_int8_depthwise(bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr | None:
    """int8/uint8 x int8 -> int32 depthwise NHWC conv2d with a constant weight as the packed compute, or None."""
    attrs = call.attrs
    data, weight = call.args
    shape = _static_shape(data)
    fits = (
        isinstance(weight, tvm.ir.expr.Constant)
        and shape is not None
        and str(attrs.data_layout) == "NHWC"
        and str(attrs.out_layout or attrs.data_layout) == "NHWC"
        and str(data.ty.dtype) in ("int8", "uint8")
        and str(weight.ty.dtype) == "int8"
        and str(attrs.out_dtype) == "int32"
    )
    if not fits:
        return None
    w_oihw = _to_oihw(weight.value.numpy(), str(attrs.kernel_layout))
    if not (int(attrs.groups) == shape[3] == w_oihw.shape[0] and w_oihw.shape[1] == 1):
        return None
    packed = np.ascontiguousarray(w_oihw[:, 0].transpose(1, 2, 0))  # [KH, KW, C]
    return bb.call_te(
        _int8_depthwise, data, relax.const(packed, "int8"), tuple(int(s) for s in attrs.strides),
        tuple(int(p) for p in attrs.padding), tuple(int(d) for d in attrs.dilation),
        primfunc_name_hint="int8_depthwise_conv2d_nhwc",
    )
