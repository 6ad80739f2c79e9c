"""Elementwise ops that TVM 0.27 lacks or gets wrong: IsInf (it ignores detect_negative/detect_positive), Swish
(opset 24; x * sigmoid(alpha * x)), BitShift past the type's width, Mod by an infinity, Pow of mixed or integer
types, and Dropout's mask output."""

from __future__ import annotations

import numpy as np
from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from .relax_helpers import const, dtype_of

R = relax.op


class IsInf(OnnxOpConverter):
    @classmethod
    def _impl_v10(cls, bb, inputs, attr, params):
        x = inputs[0]
        negative, positive = int(attr.get("detect_negative", 1)), int(attr.get("detect_positive", 1))
        dtype = dtype_of(x)
        if negative and positive:
            return R.isinf(x)
        if negative:
            return R.logical_and(R.isinf(x), R.less(x, const(0, dtype)))
        if positive:
            return R.logical_and(R.isinf(x), R.greater(x, const(0, dtype)))
        return relax.const(np.zeros([int(d) for d in x.ty.shape.values], bool))


class Swish(OnnxOpConverter):
    first_opset = 24

    @classmethod
    def _impl_v24(cls, bb, inputs, attr, params):
        x = inputs[0]
        alpha = float(attr.get("alpha", 1.0))
        return R.multiply(x, R.sigmoid(R.multiply(x, const(alpha, dtype_of(x)))))


class BitShift(OnnxOpConverter):
    """x << y or x >> y, with ONNX's result 0 for shift amounts of the type's width or more (TVM and C leave
    them undefined)."""

    @classmethod
    def _impl_v11(cls, bb, inputs, attr, params):
        x, y = inputs[0], inputs[1]
        direction = attr.get("direction", b"")
        direction = direction.decode() if isinstance(direction, bytes) else direction
        dtype = dtype_of(x)
        bits = np.dtype(dtype).itemsize * 8
        shifted = R.left_shift(x, y) if direction == "LEFT" else R.right_shift(x, y)
        in_range = R.logical_and(R.greater_equal(y, const(0, dtype)), R.less(y, const(bits, dtype)))
        if direction == "LEFT" or dtype.startswith("uint"):
            overflow = const(0, dtype)
        else:  # arithmetic right shift past the width leaves the sign: 0 or -1
            overflow = R.right_shift(x, const(bits - 1, dtype))
        return R.where(in_range, shifted, overflow)


class Dropout(OnnxOpConverter):
    """Dropout at inference: the output is the input and the mask is all true. TVM 0.27 returns a mask its
    compiler cannot lower; a training_mode input that is not the constant false is rejected."""

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        from ..errors import TvmcompressError
        from .relax_helpers import constant_value, shape_of

        x = inputs[0]
        training = inputs[2] if len(inputs) > 2 else None
        if training is not None:
            value = constant_value(training)
            if value is None or bool(value):
                raise TvmcompressError(
                    "Dropout in training mode (a training_mode input that is not the constant false) is not "
                    "supported: export the model for inference (model.eval()) or bind training_mode to false"
                )
        mask = relax.const(np.ones(shape_of(x), bool))
        return relax.Tuple([x, mask])


class Mod(OnnxOpConverter):
    """TVM's Mod, with the float cases of an infinite divisor fixed: x mod ±inf is x when x is 0 or has the
    divisor's sign, else the divisor (numpy's mod; fmod=1 gives x); TVM's x - floor(x/y)*y gives NaN."""

    @classmethod
    def get_converter(cls, opset):
        from tvm.relax.frontend.onnx import onnx_frontend as tvm_onnx

        convert = tvm_onnx.Mod.get_converter(opset)

        def converted(bb, inputs, attr, params):
            x, y = inputs[0], inputs[1]
            result = convert(bb, inputs, attr, params)
            dtype = dtype_of(x)
            if dtype not in ("float16", "float32", "float64"):
                return result
            zero = const(0, dtype)
            finite_by_inf = R.logical_and(R.isinf(y), R.isfinite(x))
            if int(attr.get("fmod", 0)):
                fixed = x
            else:
                # (x < 0) == (y < 0) as a bool equality breaks LLVM codegen in TVM 0.27; x * y >= 0 is the same
                # test here (x finite and nonzero where it matters, y infinite).
                same_sign = R.greater_equal(R.multiply(x, y), zero)
                fixed = R.where(R.logical_or(R.equal(x, zero), same_sign), x, y)
            return R.where(finite_by_inf, fixed, bb.normalize(result))

        return converted


class Pow(OnnxOpConverter):
    """Pow with mixed or integer types, which TVM 0.27 rejects: the exponent is cast to the base's type, and an
    integer base is raised in float64 and rounded back (exact for the results that fit the integer type)."""

    @classmethod
    def _impl_v7(cls, bb, inputs, attr, params):
        x, y = inputs[0], inputs[1]
        dtype = dtype_of(x)
        if dtype in ("float16", "float32", "float64", "bfloat16"):
            return R.power(x, R.astype(y, dtype) if dtype_of(y) != dtype else y)
        result = R.power(R.astype(x, "float64"), R.astype(y, "float64"))
        return R.astype(R.round(result), dtype)


class OneHot(OnnxOpConverter):
    """OneHot with a constant depth and any `values` tensor (TVM 0.27 wants values constant too): negative
    indices count from the end, out-of-range ones give an all-off row."""

    @classmethod
    def _impl_v9(cls, bb, inputs, attr, params):
        from ..errors import TvmcompressError
        from .relax_helpers import constant_value, shape_of

        indices, depth, values = inputs[0], inputs[1], inputs[2]
        depth_value = constant_value(depth)
        if depth_value is None:
            raise TvmcompressError("OneHot with a depth computed at run time is not supported: make depth a constant")
        depth_value = int(np.asarray(depth_value).reshape(-1)[0])
        rank = len(shape_of(indices))
        axis = int(attr.get("axis", -1))
        axis = axis + rank + 1 if axis < 0 else axis
        idx = R.astype(indices, "int64")
        idx = bb.normalize(R.where(R.less(idx, const(0, "int64")), R.add(idx, const(depth_value, "int64")), idx))
        positions = [1] * (rank + 1)
        positions[axis] = depth_value
        grid = const(np.arange(depth_value).reshape(positions), "int64")
        hot = R.equal(R.expand_dims(idx, axis), grid)
        off = R.squeeze(R.strided_slice(values, axes=[0], begin=[0], end=[1]), axis=[0])
        on = R.squeeze(R.strided_slice(values, axes=[0], begin=[1], end=[2]), axis=[0])
        return R.where(hot, on, off)
