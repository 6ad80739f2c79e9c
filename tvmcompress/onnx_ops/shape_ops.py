"""Squeeze with negative axes: TVM 0.27 converts it to `relax.squeeze(x, axis=[-2])`, whose legalization
allocates without bound (std::bad_alloc at compile time). The axes are made non-negative before that."""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.frontend.onnx import onnx_frontend as tvm_onnx
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from .relax_helpers import shape_of

_SQUEEZE = tvm.ir.Op.get("relax.squeeze")


class Squeeze(OnnxOpConverter):
    @classmethod
    def get_converter(cls, opset):
        convert = tvm_onnx.Squeeze.get_converter(opset)

        def converted(bb, inputs, attr, params):
            expr = convert(bb, inputs, attr, params)
            if isinstance(expr, relax.Call) and expr.op == _SQUEEZE and expr.attrs.axis is not None:
                rank = expr.args[0].ty.ndim  # the rank alone: dims may be symbolic (dynamic shapes)
                axes = [int(a) % rank for a in expr.attrs.axis]
                return relax.op.squeeze(expr.args[0], axis=axes)
            return expr

        return converted


class CenterCropPad(OnnxOpConverter):
    """CenterCropPad (opset 18) with a constant target shape, which TVM 0.27 lacks: a centered slice where the
    target is smaller, a centered zero pad where it is larger (the odd element goes to the end, as in onnx's
    reference)."""

    @classmethod
    def _impl_v18(cls, bb, inputs, attr, params):
        import numpy as np

        from ..errors import TvmcompressError
        from .relax_helpers import constant_value

        x = inputs[0]
        target = constant_value(inputs[1])
        if target is None:
            raise TvmcompressError("CenterCropPad with a shape computed at run time is not supported: make it a constant")
        shape = shape_of(x)
        rank = len(shape)
        axes = [a % rank for a in attr.get("axes", range(rank))]
        begin, end, pads = [0] * rank, list(shape), [0] * (2 * rank)
        for axis, size in zip(axes, np.asarray(target).reshape(-1).tolist()):
            dim = shape[axis]
            if size < dim:
                begin[axis] = (dim - size) // 2
                end[axis] = begin[axis] + size
            elif size > dim:
                pads[axis] = (size - dim) // 2
                pads[rank + axis] = size - dim - pads[axis]
        out = bb.normalize(relax.op.strided_slice(x, axes=list(range(rank)), begin=begin, end=end))
        if any(pads):
            pad_width = [p for axis in range(rank) for p in (pads[axis], pads[rank + axis])]
            out = relax.op.nn.pad(out, pad_width=pad_width, pad_value=0.0)
        return out


class EyeLike(OnnxOpConverter):
    """Ones on diagonal k of a 2-D shape, as a constant (the shape is static), of the `dtype` attribute's type when
    set, else the input's; TVM 0.27 rejects a dtype that differs from the input's."""

    @classmethod
    def _impl_v9(cls, bb, inputs, attr, params):
        import numpy as np
        from onnx.helper import tensor_dtype_to_np_dtype

        rows, cols = shape_of(inputs[0])
        dtype = np.dtype(tensor_dtype_to_np_dtype(int(attr["dtype"]))) if "dtype" in attr else None
        dtype = dtype if dtype is not None else str(inputs[0].ty.dtype.dtype)
        eye = np.eye(rows, cols, k=int(attr.get("k", 0)), dtype=dtype)
        return relax.const(eye, str(eye.dtype))  # without the dtype, relax.const makes float64 float32


class Split(OnnxOpConverter):
    """TVM's Split, except with a zero-size part: TVM 0.27 splits at sorted indices and rejects two equal ones
    ("split_indices must be sorted"); each part is then a slice (an empty one for a zero size)."""

    @classmethod
    def get_converter(cls, opset):
        convert = tvm_onnx.Split.get_converter(opset)

        def converted(bb, inputs, attr, params):
            from .relax_helpers import constant_value

            sizes = attr.get("split")
            if sizes is None and len(inputs) > 1 and inputs[1] is not None:
                value = constant_value(inputs[1])
                sizes = None if value is None else value.reshape(-1).tolist()
            if sizes is None or all(int(s) > 0 for s in sizes):
                return convert(bb, inputs, attr, params)
            x = inputs[0]
            axis = int(attr.get("axis", 0)) % len(shape_of(x))
            parts, start = [], 0
            for size in (int(s) for s in sizes):
                parts.append(bb.normalize(relax.op.strided_slice(x, axes=[axis], begin=[start], end=[start + size])))
                start += size
            return relax.Tuple(parts)

        return converted
