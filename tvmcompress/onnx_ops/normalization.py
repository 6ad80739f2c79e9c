"""LayerNormalization with its secondary outputs.

TVM 0.27 returns the scalar 0 for `Mean` and `InvStdDev`, and normalizes over as many axes as the scale has
dims (wrong for a scale that broadcasts). This converter normalizes over `axis..rank-1`, computes in the
`stash_type` precision as the spec says, and returns Mean and InvStdDev with the reduced axes kept as 1.
"""

from __future__ import annotations

import numpy as np
from onnx.helper import tensor_dtype_to_np_dtype
from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from .relax_helpers import const, dtype_of, shape_of

R = relax.op


class LayerNormalization(OnnxOpConverter):
    @classmethod
    def _impl_v17(cls, bb, inputs, attr, params):
        x, scale = inputs[0], inputs[1]
        bias = inputs[2] if len(inputs) > 2 else None
        rank = len(shape_of(x))
        axis = int(attr.get("axis", -1))
        axis = axis + rank if axis < 0 else axis
        axes = list(range(axis, rank))
        epsilon = float(attr.get("epsilon", 1e-5))
        dtype = dtype_of(x)
        stash = np.dtype(tensor_dtype_to_np_dtype(int(attr.get("stash_type", 1)))).name

        xs = R.astype(x, stash) if stash != dtype else x
        mean = bb.normalize(R.mean(xs, axis=axes, keepdims=True))
        centered = bb.normalize(R.subtract(xs, mean))
        variance = R.mean(R.multiply(centered, centered), axis=axes, keepdims=True)
        inv_std = bb.normalize(R.rsqrt(R.add(variance, const(epsilon, stash))))
        normalized = R.multiply(centered, inv_std)
        normalized = R.astype(normalized, dtype) if stash != dtype else normalized
        y = R.multiply(normalized, scale)
        if bias is not None:
            y = R.add(y, bias)
        return relax.Tuple([bb.normalize(y), mean, inv_std])


class BatchNormalization(OnnxOpConverter):
    """TVM's BatchNormalization, with its training mode rejected: TVM ignores `training_mode` and normalizes with
    the running statistics, where ONNX normalizes with the batch's own and returns updated running statistics."""

    @classmethod
    def unsupported_form(cls, node):
        if any(a.name == "training_mode" and a.i for a in node.attribute):
            return "BatchNormalization(training_mode=1)"
        return None

    @classmethod
    def get_converter(cls, opset):
        from tvm.relax.frontend.onnx import onnx_frontend as tvm_onnx

        return tvm_onnx.BatchNormalization.get_converter(opset)


class RMSNormalization(OnnxOpConverter):
    """RMSNormalization (opset 23): x / sqrt(mean(x^2 over axis..rank-1) + epsilon) * scale, in stash_type.
    TVM 0.27's converter fails to compile when the axes start at 0."""

    first_opset = 23

    @classmethod
    def _impl_v23(cls, bb, inputs, attr, params):
        x, scale = inputs[0], inputs[1]
        rank = len(shape_of(x))
        axis = int(attr.get("axis", -1))
        axes = list(range(axis + rank if axis < 0 else axis, rank))
        epsilon = float(attr.get("epsilon", 1e-5))
        dtype = dtype_of(x)
        stash = np.dtype(tensor_dtype_to_np_dtype(int(attr.get("stash_type", 1)))).name
        xs = R.astype(x, stash) if stash != dtype else x
        mean_square = R.mean(R.multiply(xs, xs), axis=axes, keepdims=True)
        normalized = R.multiply(xs, R.rsqrt(R.add(mean_square, const(epsilon, stash))))
        normalized = R.astype(normalized, dtype) if stash != dtype else normalized
        return R.multiply(normalized, scale)


class LpNormalization(OnnxOpConverter):
    """x / ||x||_p along `axis` (p is 1 or 2), 0 where the norm is 0 (onnx's reference: 0/0 = 0)."""

    @classmethod
    def unsupported_form(cls, node):
        p = next((a.i for a in node.attribute if a.name == "p"), 2)
        return None if p in (1, 2) else f"LpNormalization(p={p})"

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        x = inputs[0]
        dtype = dtype_of(x)
        axis = int(attr.get("axis", -1))
        if int(attr.get("p", 2)) == 1:
            norm = R.sum(R.abs(x), axis=[axis], keepdims=True)
        else:
            norm = R.sqrt(R.sum(R.multiply(x, x), axis=[axis], keepdims=True))
        norm = bb.normalize(norm)
        zero = const(0, dtype)
        is_zero = bb.normalize(R.equal(norm, zero))
        safe = R.where(is_zero, const(1, dtype), norm)
        return R.where(is_zero, zero, R.divide(x, safe))
