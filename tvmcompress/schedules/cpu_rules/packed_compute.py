"""Legalizations of conv2d and matmul with constant weights into TE computes on pre-packed weights.

The weight is re-laid out with numpy at compile time and bound as a new constant, so the artifact
carries packed weights and no layout transform runs at inference:
- conv2d, NHWC data: weight OIHW -> [ceil(O/ocb), KH, KW, I, ocb]; depthwise: -> [KH, KW, C];
- matmul with a 2-D constant right operand [K, N]: -> [ceil(N/nb), K, nb];
- 3x3 stride-1 conv2d with enough channels: Winograd, weight -> U = G g G^T packed like a matmul's
  (winograd_compute.py).
`ocb`/`nb` is one or two SIMD registers of output channels, so the inner reduction streams weights
contiguously. The main block carries the annotation `tvmcompress.schedule` naming its packed kind,
which the Conv2D / Dense rules match on. Calls that do not fit (dynamic shapes, non-float32,
non-constant weight, NCHW data, general groups) fall through to TVM's own legalization.
"""

from __future__ import annotations

import functools

from collections.abc import Callable

import numpy as np
import tvm
from tvm import relax, te, tirx
from tvm.ir.expr import Constant
from tvm.target import Target

from .target_info import cpu_info
from .tiling import choose_register_tile
from .winograd_compute import choose_winograd_tile, emit_winograd_conv2d

SCHEDULE_KEY = "tvmcompress.schedule"
CONV2D_PACKED = "conv2d_nhwc_packed"
DEPTHWISE_PACKED = "depthwise_conv2d_nhwc"
DENSE_PACKED = "dense_packed"


def _default_legalize(op_name: str) -> Callable:
    return tvm.ir.Op.get(op_name).get_attr("FLegalize")


def _static_shape(expr: relax.Expr) -> list[int] | None:
    sinfo = expr.ty
    if not isinstance(sinfo, relax.TensorType) or sinfo.shape is None:
        return None
    dims = []
    for dim in sinfo.shape.values:
        if not isinstance(dim, tirx.IntImm):
            return None
        dims.append(int(dim))
    return dims


def _shape_with_symbols(expr: relax.Expr, static_axes: tuple[int, ...]) -> list | None:
    """The shape of `expr` when the dims at `static_axes` are static (ints) and the others static or symbolic
    (dynamic shapes: a symbolic batch, height or width stays a tir expression); else None."""
    sinfo = expr.ty
    if not isinstance(sinfo, relax.TensorType) or sinfo.shape is None:
        return None
    values = list(sinfo.shape.values)
    if any(not isinstance(values[axis], tirx.IntImm) for axis in static_axes):
        return None
    return [int(d) if isinstance(d, tirx.IntImm) else d for d in values]


# Dynamic shapes: the register tile of a symbolic width is chosen for a width every row count up to MAX_ROWS
# divides, so the largest spill-free tile wins; the loop's tail iterations run under a predicate.
SYMBOLIC_ROWS = 420


def _is_default_or_f32(out_dtype) -> bool:
    return out_dtype is None or str(out_dtype) in ("", "void", "float32")


def _block_width(extent: int, lanes: int) -> int:
    """Output-channel block: two SIMD registers if they divide the extent, else one."""
    for width in (2 * lanes, lanes):
        if extent % width == 0:
            return width
    return lanes


def _to_oihw(weight: np.ndarray, kernel_layout: str) -> np.ndarray:
    return np.transpose(weight, [kernel_layout.index(axis) for axis in "OIHW"])


def _pad_nhwc(data: te.Tensor, pad: tuple[int, int, int, int]) -> te.Tensor:
    top, left, bottom, right = pad
    if not any(pad):
        return data
    n, h, w, c = data.shape

    def fpad(i_n, i_h, i_w, i_c):
        inside = tvm.tirx.all(i_h >= top, i_h < h + top, i_w >= left, i_w < w + left)
        return tvm.tirx.if_then_else(inside, data[i_n, i_h - top, i_w - left, i_c], tvm.tirx.const(0.0, data.dtype))

    return te.compute((n, h + top + bottom, w + left + right, c), fpad, name="pad_nhwc")


def _conv2d_nhwc_packed(data, wpacked, strides, padding, dilation, out_channels, ocb):
    n, h, w, c = (int(x) if isinstance(x, tirx.IntImm) else x for x in data.shape)
    _, kh, kw, _, _ = (int(x) for x in wpacked.shape)
    (sh, sw), (dh, dw) = strides, dilation
    top, left, bottom, right = padding
    oh = (h + top + bottom - (kh - 1) * dh - 1) // sh + 1
    ow = (w + left + right - (kw - 1) * dw - 1) // sw + 1
    padded = _pad_nhwc(data, padding)
    rkh, rkw, ric = te.reduce_axis((0, kh), "rkh"), te.reduce_axis((0, kw), "rkw"), te.reduce_axis((0, c), "ric")
    return te.compute(
        (n, oh, ow, out_channels),
        lambda b, y, x, o: te.sum(
            padded[b, y * sh + rkh * dh, x * sw + rkw * dw, ric] * wpacked[o // ocb, rkh, rkw, ric, o % ocb],
            axis=[rkh, rkw, ric],
        ),
        name="conv2d_nhwc",
        attrs={SCHEDULE_KEY: CONV2D_PACKED},
    )


def _depthwise_conv2d_nhwc(data, wpacked, strides, padding, dilation):
    n, h, w, c = (int(x) for x in data.shape)
    kh, kw, _ = (int(x) for x in wpacked.shape)
    (sh, sw), (dh, dw) = strides, dilation
    top, left, bottom, right = padding
    oh = (h + top + bottom - (kh - 1) * dh - 1) // sh + 1
    ow = (w + left + right - (kw - 1) * dw - 1) // sw + 1
    padded = _pad_nhwc(data, padding)
    rkh, rkw = te.reduce_axis((0, kh), "rkh"), te.reduce_axis((0, kw), "rkw")
    return te.compute(
        (n, oh, ow, c),
        lambda b, y, x, o: te.sum(padded[b, y * sh + rkh * dh, x * sw + rkw * dw, o] * wpacked[rkh, rkw, o], axis=[rkh, rkw]),
        name="depthwise_conv2d_nhwc",
        attrs={SCHEDULE_KEY: DEPTHWISE_PACKED},
    )


def legalize_conv2d(bb: relax.BlockBuilder, call: relax.Call, winograd: bool = True) -> relax.Expr:
    """conv2d(NHWC data, constant weight) -> packed TE compute (Winograd where it pays and `winograd` allows);
    anything else -> TVM's legalization."""
    attrs = call.attrs
    data, weight = call.args
    data_shape = _static_shape(data)
    symbolic = data_shape is None and attrs.data_layout == "NHWC"
    if symbolic:  # dynamic shapes: N, H, W may be symbolic; channels must be static
        data_shape = _shape_with_symbols(data, (3,))
    fits = (
        isinstance(weight, Constant)
        and data_shape is not None
        and attrs.data_layout == "NHWC"
        and attrs.out_layout == "NHWC"
        and data.ty.dtype == "float32"
        and weight.ty.dtype == "float32"
        and _is_default_or_f32(attrs.out_dtype)
    )
    if not fits:
        return _default_legalize("relax.nn.conv2d")(bb, call)
    w_oihw = _to_oihw(weight.value.numpy(), str(attrs.kernel_layout))
    out_c, in_c_per_group, kh, kw = w_oihw.shape
    groups = int(attrs.groups)
    strides = tuple(int(s) for s in attrs.strides)
    dilation = tuple(int(d) for d in attrs.dilation)
    padding = tuple(int(p) for p in attrs.padding)
    info = cpu_info(Target.current(allow_none=False))
    lanes = info.lanes(32)
    if groups == 1:
        # NOTE: Winograd's tile counts need static spatial dims: a symbolic one keeps the direct convolution.
        spatial_static = isinstance(data_shape[1], int) and isinstance(data_shape[2], int)
        tile_m = winograd and spatial_static and choose_winograd_tile(data_shape, w_oihw.shape, strides, dilation, padding, lanes)
        if tile_m:
            return emit_winograd_conv2d(bb, data, w_oihw, padding, tile_m, _block_width(out_c, lanes), _dense_packed)
        out_w = SYMBOLIC_ROWS if not isinstance(data_shape[2], int) else (
            (data_shape[2] + padding[1] + padding[3] - (kw - 1) * dilation[1] - 1) // strides[1] + 1)
        ocb = choose_register_tile(out_w, out_c, info, lanes).channels
        blocks = -(-out_c // ocb)
        padded_w = np.zeros((blocks * ocb, in_c_per_group, kh, kw), "float32")
        padded_w[:out_c] = w_oihw
        packed = padded_w.reshape(blocks, ocb, in_c_per_group, kh, kw).transpose(0, 3, 4, 2, 1)
        return bb.call_te(
            _conv2d_nhwc_packed, data, relax.const(np.ascontiguousarray(packed)),
            strides, padding, dilation, out_c, ocb, primfunc_name_hint="conv2d_nhwc_packed",
        )
    if groups == data_shape[3] == out_c and in_c_per_group == 1 and not symbolic:
        packed = np.ascontiguousarray(w_oihw[:, 0].transpose(1, 2, 0))  # [KH, KW, C]
        return bb.call_te(
            _depthwise_conv2d_nhwc, data, relax.const(packed), strides, padding, dilation,
            primfunc_name_hint="depthwise_conv2d_nhwc",
        )
    return _default_legalize("relax.nn.conv2d")(bb, call)


def _dense_packed(data, wpacked, out_features, nb):
    """A[..., M, K] x W[..., N/nb, K, nb]; W's leading dims (Winograd's per-element weights) follow A's last ones."""
    *batch, _, k = data.shape
    m = data.shape[-2]
    rk = te.reduce_axis((0, k), "rk")
    nbatch = len(batch)
    wbatch = len(wpacked.shape) - 3

    def fcompute(*idx):
        weight_index = (*idx[nbatch - wbatch:nbatch], idx[-1] // nb, rk, idx[-1] % nb)
        return te.sum(data[(*idx[:nbatch], idx[nbatch], rk)] * wpacked[weight_index], axis=rk)

    return te.compute((*batch, m, out_features), fcompute, name="dense", attrs={SCHEDULE_KEY: DENSE_PACKED})


def legalize_matmul(bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
    """matmul(A[..., M, K], constant B[K, N]) -> packed TE compute; anything else -> TVM's legalization."""
    lhs, rhs = call.args
    lhs_shape = _static_shape(lhs)
    if lhs_shape is None and getattr(lhs.ty, "ndim", -1) >= 2:  # dynamic shapes: a symbolic M or batch
        lhs_shape = _shape_with_symbols(lhs, (lhs.ty.ndim - 1,))
    fits = (
        isinstance(rhs, Constant)
        and lhs_shape is not None
        and len(lhs_shape) >= 2
        and len(rhs.value.shape) == 2
        and lhs.ty.dtype == "float32"
        and rhs.ty.dtype == "float32"
        and _is_default_or_f32(call.attrs.out_dtype)
    )
    if not fits:
        return _default_legalize("relax.matmul")(bb, call)
    weight = rhs.value.numpy()
    k, n = weight.shape
    lanes = cpu_info(Target.current(allow_none=False)).lanes(32)
    nb = _block_width(n, lanes)
    blocks = -(-n // nb)
    padded = np.zeros((k, blocks * nb), "float32")
    padded[:, :n] = weight
    packed = np.ascontiguousarray(padded.reshape(k, blocks, nb).transpose(1, 0, 2))
    return bb.call_te(_dense_packed, lhs, relax.const(packed), n, nb, primfunc_name_hint="dense_packed")


def legalize_map(winograd: bool = True) -> dict:
    """The `customize_legalize_map` of our packed computes. `winograd=False` keeps every convolution direct: weights
    stay their original size and results closer to a direct float32 convolution, for some speed (winograd_compute)."""
    return {"relax.nn.conv2d": functools.partial(legalize_conv2d, winograd=winograd), "relax.matmul": legalize_matmul}

