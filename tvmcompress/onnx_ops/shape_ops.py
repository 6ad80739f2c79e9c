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
                rank = len(shape_of(expr.args[0]))
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
