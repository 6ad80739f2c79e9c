"""Forms of ops that TVM 0.27 converts with wrong numbers, rejected at import with a message that names them.

Each wrapper runs TVM's own converter once the form is known to be one TVM gets right.
"""

from __future__ import annotations

import numpy as np
from tvm import relax
from tvm.relax.frontend.onnx import onnx_frontend as tvm_onnx
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from ..errors import TvmcompressError
from .relax_helpers import constant_value, shape_of


def _reject(form: str, why: str, fix: str):
    raise TvmcompressError(f"{form} is not supported: {why}; {fix}")


class Resize(OnnxOpConverter):
    """TVM computes the sampling scale as output size / input size and ignores `antialias`, `axes` and
    `keep_aspect_ratio_policy`; ONNX uses the given scales. Both agree when every scale gives an integer size."""

    @classmethod
    def unsupported_form(cls, node):
        attrs = {a.name: a for a in node.attribute}
        policy = attrs.get("keep_aspect_ratio_policy")
        if policy is not None and policy.s not in (b"stretch",):
            return f"Resize(keep_aspect_ratio_policy={policy.s.decode()})"
        return None

    @classmethod
    def get_converter(cls, opset):
        convert = tvm_onnx.Resize.get_converter(opset)

        def converted(bb, inputs, attr, params):
            x = inputs[0]
            shape = shape_of(x)
            if "axes" in attr:
                inputs, attr = _all_axes(inputs, attr, shape)
            scales = constant_value(inputs[2]) if len(inputs) > 2 and inputs[2] is not None else None
            if scales is not None and scales.size:
                scales = scales.astype(np.float64)
                if any(s != 1 for s in scales[:2]):
                    _reject("Resize with a scale on the batch or channel axis", "TVM resizes spatial axes only",
                            "resize the spatial axes")
                exact = [float(d * s) for d, s in zip(shape, scales)]
                if any(abs(e - round(e)) > 1e-6 for e in exact):
                    if _taps_apply(attr):
                        return _resize_by_taps(bb, x, shape, scales, attr)
                    _reject(f"Resize(scales={scales.tolist()}) of a {list(shape)} input",
                            "the scales give a fractional output size, and TVM samples with output/input instead "
                            "of the given scale", "use sizes, or scales that give integer sizes")
            if int(attr.get("antialias", 0)):
                out = _output_size(shape, scales, inputs)
                if out is not None and any(o < i for o, i in zip(out[2:], shape[2:])):
                    _reject("Resize(antialias=1) when downsampling", "TVM ignores antialias",
                            "resize without antialias, or upsample")
            if attr.get("coordinate_transformation_mode") == b"align_corners":
                out = _output_size(shape, scales, inputs)
                single = [axis for axis in range(2, len(shape)) if out is not None and int(out[axis]) == 1]
                if single:
                    return _align_corners_to_one(bb, convert, inputs, attr, params, out, single)
            return convert(bb, inputs, attr, params)

        return converted


def _all_axes(inputs, attr, shape):
    """Resize's roi / scales / sizes given for `axes` only, made full-rank (scale 1, the input's size, the whole
    extent elsewhere), and `axes` dropped: TVM ignores it and reads the values as if they were for every axis."""
    rank = len(shape)
    axes = [int(a) % rank for a in attr["axes"]]
    inputs = list(inputs) + [None] * (4 - len(inputs))
    for index, fill in ((1, None), (2, np.ones(rank)), (3, np.asarray(shape))):
        if inputs[index] is None:
            continue
        given = constant_value(inputs[index])
        if given is None:
            _reject("Resize(axes=...) with roi, scales or sizes computed at run time", "its full-rank form is needed",
                    "make them constants")
        if given.size == 0:
            continue
        if index == 1:  # roi: starts of the axes, then their ends
            full = np.concatenate([np.zeros(rank), np.ones(rank)]).astype(given.dtype)
            full[axes] = given[: len(axes)]
            full[[rank + a for a in axes]] = given[len(axes):]
        else:
            full = fill.astype(given.dtype)
            full[axes] = given
        inputs[index] = relax.const(full, str(full.dtype))
    return tvm_onnx.onnx_input(inputs), {k: v for k, v in attr.items() if k != "axes"}


def _align_corners_to_one(bb, convert, inputs, attr, params, out, single):
    """align_corners samples at y * (in - 1) / (out - 1), which ONNX defines as 0 where out is 1; TVM divides by
    zero there. Such an axis takes the input's first slice: resize that slice repeated to 2 along the axis (2 -> 2
    under align_corners samples each slice exactly, and leaves the other axes' interpolation as it was) and keep
    the output's first slice."""
    x = inputs[0]
    for axis in single:
        first = bb.normalize(relax.op.strided_slice(x, axes=[axis], begin=[0], end=[1]))
        x = bb.normalize(relax.op.repeat(first, 2, axis=axis))
    sizes = np.asarray(out, np.int64)
    sizes[single] = 2
    y = convert(bb, tvm_onnx.onnx_input([x, inputs[1], None, relax.const(sizes, "int64")]), attr, params)
    y = bb.normalize(y)
    return relax.op.strided_slice(y, axes=single, begin=[0] * len(single), end=[1] * len(single))


# NOTE: not align_corners: with a fractional size, ONNX's reference divides by the unfloored output length and
# onnxruntime by the floored one, so no answer matches both; it stays refused.
_TAP_COORDINATES = (b"half_pixel", b"asymmetric", b"pytorch_half_pixel", b"half_pixel_symmetric")


def _taps_apply(attr) -> bool:
    """Whether _resize_by_taps implements this form (the others keep their one-line refusal)."""
    return (attr.get("mode", b"nearest") in (b"nearest", b"linear") and not int(attr.get("antialias", 0))
            and attr.get("coordinate_transformation_mode", b"half_pixel") in _TAP_COORDINATES)


def _source_coordinates(size_in: int, size_out: int, scale: float, mode: bytes) -> np.ndarray:
    """The ONNX Resize coordinate transformation: each output index's position in the input axis."""
    x = np.arange(size_out, dtype=np.float64)
    if mode == b"asymmetric":
        return x / scale
    if mode == b"pytorch_half_pixel" and size_out == 1:
        return np.zeros_like(x)
    if mode == b"half_pixel_symmetric":
        offset = size_in / 2 * (1 - size_out / (scale * size_in))
        return offset + (x + 0.5) / scale - 0.5
    return (x + 0.5) / scale - 0.5  # half_pixel, pytorch_half_pixel


def _nearest_index(position: np.ndarray, mode: bytes) -> np.ndarray:
    if mode == b"floor":
        return np.floor(position)
    if mode == b"ceil":
        return np.ceil(position)
    fraction = position - np.floor(position)
    halfway_up = np.ceil(position) if mode == b"round_prefer_ceil" else np.floor(position)
    return np.where(fraction == 0.5, halfway_up, np.round(position))


def _resize_by_taps(bb, x, shape, scales, attr):
    """Resize with scales whose output size is fractional (ONNX floors it and samples with the given scale; TVM
    would sample with output/input): each spatial axis is gathered at constant indices and, for linear, blended
    with constant weights, computed here as ONNX defines them (neighbours past an edge read the edge)."""
    coordinates = attr.get("coordinate_transformation_mode", b"half_pixel")
    linear = attr.get("mode", b"nearest") == b"linear"
    for axis in range(2, len(shape)):
        size_in, scale = shape[axis], float(scales[axis])
        size_out = int(np.floor(size_in * scale))
        if size_out == size_in and scale == 1:
            continue
        position = _source_coordinates(size_in, size_out, scale, coordinates)
        if not linear:
            index = _nearest_index(position, attr.get("nearest_mode", b"round_prefer_floor"))
            x = bb.normalize(relax.op.take(x, _index_const(index, size_in), axis=axis, mode="clip"))
            continue
        low = np.floor(position)
        weight = (position - low).reshape([size_out] + [1] * (len(shape) - 1 - axis))
        dtype = x.ty.dtype
        taps = [bb.normalize(relax.op.take(x, _index_const(low + k, size_in), axis=axis, mode="clip"))
                for k in (0, 1)]
        x = bb.normalize(relax.op.add(relax.op.multiply(taps[0], relax.const(1 - weight, dtype)),
                                      relax.op.multiply(taps[1], relax.const(weight, dtype))))
    return x


def _index_const(index: np.ndarray, size: int):
    return relax.const(np.clip(index, 0, size - 1).astype(np.int64), "int64")


def _output_size(shape, scales, inputs):
    if scales is not None and scales.size:
        return [int(d * s) for d, s in zip(shape, scales)]
    sizes = constant_value(inputs[3]) if len(inputs) > 3 and inputs[3] is not None else None
    return sizes.tolist() if sizes is not None else None


class RoiAlign(OnnxOpConverter):
    """TVM's max mode takes the max of the bilinear samples' weighted corners differently from onnxruntime."""

    @classmethod
    def unsupported_form(cls, node):
        if any(a.name == "mode" and a.s == b"max" for a in node.attribute):
            return "RoiAlign(mode=max)"
        return None

    @classmethod
    def get_converter(cls, opset):
        return tvm_onnx.RoiAlign.get_converter(opset)


class ConvTranspose(OnnxOpConverter):
    """TVM ignores `output_shape`; we turn it into the pads it implies (the ONNX formula), then convert."""

    @classmethod
    def get_converter(cls, opset):
        convert = tvm_onnx.ConvTranspose.get_converter(opset)

        def converted(bb, inputs, attr, params):
            if "output_shape" in attr:
                attr = dict(attr)
                x_shape, w_shape = shape_of(inputs[0]), shape_of(inputs[1])
                spatial = len(x_shape) - 2
                output_shape = list(attr.pop("output_shape"))[-spatial:]
                strides = list(attr.get("strides", [1] * spatial))
                dilations = list(attr.get("dilations", [1] * spatial))
                kernel = list(attr.get("kernel_shape", w_shape[2:]))
                out_pad = list(attr.get("output_padding", [0] * spatial))
                auto_pad = attr.pop("auto_pad", b"NOTSET")
                auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
                begin, end = [], []
                for i in range(spatial):
                    total = (strides[i] * (x_shape[2 + i] - 1) + out_pad[i] + (kernel[i] - 1) * dilations[i] + 1
                             - output_shape[i])
                    if total < 0:  # a larger output than the pads-free one: extra rows at the end
                        out_pad[i] -= total
                        total = 0
                    if auto_pad == "SAME_UPPER":
                        begin.append(total // 2)
                        end.append(total - total // 2)
                    else:
                        begin.append(total - total // 2)
                        end.append(total // 2)
                attr["pads"] = tuple(begin + end)
                attr["output_padding"] = tuple(out_pad)
            return convert(bb, inputs, attr, params)

        return converted


class MaxPool(OnnxOpConverter):
    """TVM converts MaxPool's first output only; the Indices output is rejected by name."""

    @classmethod
    def unsupported_form(cls, node):
        if len(node.output) > 1 and node.output[1]:
            return "MaxPool(Indices output)"
        return None

    @classmethod
    def get_converter(cls, opset):
        return tvm_onnx.MaxPool.get_converter(opset)


class NonMaxSuppression(OnnxOpConverter):
    """Its output's row count depends on the data. TVM 0.27 returns the selection padded to a static size, which
    the static output shape of a canonical model does not describe: the library returned zero rows."""

    @classmethod
    def unsupported_form(cls, node):
        return "NonMaxSuppression (data-dependent output size)"

    @classmethod
    def get_converter(cls, opset):
        return tvm_onnx.NonMaxSuppression.get_converter(opset)
