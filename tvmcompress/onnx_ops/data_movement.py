"""SpaceToDepth with `mode` (opset 28 adds CRD; TVM 0.27 converts DCR only) and TensorScatter (opset 24, which
TVM 0.27 lacks): pure data movement, written as reshape / transpose / scatter_elements on static shapes, as
onnx's reference (op_space_to_depth.py, op_tensor_scatter.py) defines them. MaxUnpool goes to TVM's converter
except its output_shape form, which is rejected by name."""

from __future__ import annotations

import numpy as np
from tvm import relax
from tvm.relax.frontend.onnx import onnx_frontend as tvm_onnx
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from ..errors import TvmcompressError
from .indexing import checked_indices, where_indices
from .relax_helpers import const, shape_of

R = relax.op


def _string(value, default: str) -> str:
    if value is None:
        return default
    return value.decode() if isinstance(value, bytes) else str(value)


class SpaceToDepth(OnnxOpConverter):
    """[N, C, H, W] -> [N, C*b*b, H/b, W/b]; DCR puts the block offsets before the channel, CRD after it."""

    @classmethod
    def unsupported_form(cls, node):
        mode = next((a.s for a in node.attribute if a.name == "mode"), b"DCR")
        return None if mode in (b"DCR", b"CRD") else f"SpaceToDepth(mode={mode.decode()})"

    @classmethod
    def get_converter(cls, opset):
        return cls._impl

    @classmethod
    def _impl(cls, bb, inputs, attr, params):
        x = inputs[0]
        n, c, h, w = shape_of(x)
        b = int(attr["blocksize"])
        blocks = bb.normalize(R.reshape(x, (n, c, h // b, b, w // b, b)))
        order = [0, 3, 5, 1, 2, 4] if _string(attr.get("mode"), "DCR") == "DCR" else [0, 1, 3, 5, 2, 4]
        return R.reshape(R.permute_dims(blocks, order), (n, c * b * b, h // b, w // b))


class TensorScatter(OnnxOpConverter):
    """past_cache with `update` written along `axis` from write_indices[batch] on (mod the axis size in circular
    mode); write_indices absent means 0."""

    first_opset = 24

    @classmethod
    def unsupported_form(cls, node):
        mode = next((a.s for a in node.attribute if a.name == "mode"), b"linear")
        if mode not in (b"linear", b"circular"):
            return f"TensorScatter(mode={mode.decode()})"
        return None

    @classmethod
    def get_converter(cls, opset):
        return cls._impl

    @classmethod
    def _impl(cls, bb, inputs, attr, params):
        cache, update = inputs[0], inputs[1]
        write = inputs[2] if len(inputs) > 2 and inputs[2] is not None else None
        cache_shape, update_shape = shape_of(cache), shape_of(update)
        rank = len(cache_shape)
        axis = int(attr.get("axis", -2)) % rank
        if axis == 0:
            raise TvmcompressError("TensorScatter(axis=0) is not supported: the batch axis cannot be the sequence axis")
        length = update_shape[axis]
        steps = np.arange(length, dtype=np.int64).reshape([1] * axis + [length] + [1] * (rank - axis - 1))
        index = const(steps, "int64")
        if write is not None:
            start = R.reshape(R.astype(write, "int64"), [cache_shape[0]] + [1] * (rank - 1))
            index = R.add(start, index)
        circular = _string(attr.get("mode"), "linear") == "circular"
        if circular:
            index = R.floor_mod(index, const(cache_shape[axis], "int64"))
        index = bb.normalize(R.broadcast_to(index, update_shape))
        if write is not None and not circular:  # write_indices + the update's length must stay inside the cache
            where = where_indices(attr, 2, "write_indices, plus the update's positions", write)
            index = checked_indices(bb, index, [cache_shape[axis]], where, allow_negative=False)
        return R.scatter_elements(cache, index, update, axis=axis)



class MaxUnpool(OnnxOpConverter):
    """TVM's converter on checked indices. Its output_shape form gives wrong values (conformance: 8 of 25
    elements of test_maxunpool_export_with_output_shape misplaced), so that form is rejected by name.

    TVM scatters each value to the flat output position its index names, unchecked: an index past the output
    writes past it. Indices address the whole flattened output (batch and channels included); onnxruntime takes
    [0, size) and refuses anything else, negative ones too, so `checked_indices` asserts that range."""

    @classmethod
    def unsupported_form(cls, node):
        if len(node.input) > 2 and node.input[2]:
            return "MaxUnpool(output_shape)"
        return None

    @classmethod
    def get_converter(cls, opset):
        convert = tvm_onnx.MaxUnpool.get_converter(opset)

        def checked(bb, inputs, attr, params):
            data, indices = inputs[0], inputs[1]
            size = int(np.prod(cls._output_shape(shape_of(data), attr), dtype=np.int64))
            where = where_indices(attr, 1, "I", indices)
            indices = checked_indices(bb, indices, [size], where, allow_negative=False)
            return convert(bb, tvm_onnx.onnx_input([data, indices, inputs[2]]), attr, params)

        return checked

    @staticmethod
    def _output_shape(shape: list[int], attr: dict) -> list[int]:
        """(in - 1) * stride + kernel - pad_begin - pad_end per spatial axis: the shape TVM's converter builds."""
        kernel = list(attr["kernel_shape"])
        strides = list(attr.get("strides", [1] * len(kernel)))
        pads = list(attr.get("pads", [0] * 2 * len(kernel)))
        spatial = [(n - 1) * s + k - pads[i] - pads[i + len(kernel)]
                   for i, (n, s, k) in enumerate(zip(shape[2:], strides, kernel))]
        return [*shape[:2], *spatial]
