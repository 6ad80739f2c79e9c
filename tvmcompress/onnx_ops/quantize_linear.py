"""QuantizeLinear and DequantizeLinear on the types and forms TVM 0.27 lacks: sub-byte types (int4, uint4, int2,
uint2, float4e2m1; carried as in sub_byte.py), the float8 types, and blocked quantization (`block_size`).

Both follow onnx's reference (onnx/reference/ops/op_quantize_linear.py, op_dequantize_linear.py):
- Quantize: x / scale in their type; integer types: rounded half to even, plus the zero point, clipped to the
  type's range; float8: x / scale cast with float8.encode (saturate as the attribute says; the zero point is
  zero by the spec); float4e2m1: x / scale + zero point, rounded as sub_byte.round_to_float4.
- Dequantize: (x - zero point) in float32 (float8 and float4: x alone, their zero point is zero by the spec),
  times the scale, cast to the scale's type (or output_dtype).
The scale and zero point are a scalar, a 1-D tensor along `axis`, or (block_size > 0) a tensor of x's rank whose
`axis` dimension counts blocks: repeated block_size times along it and cut to x's size.

Other forms (8 and 16-bit integers, not blocked) go to TVM's converters, which lower to relax.quantize /
relax.dequantize, the ops our quantization passes read.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto
from tvm import relax
from tvm.relax.frontend.onnx import onnx_frontend as tvm_onnx
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter, get_type

from ..errors import TvmcompressError
from . import float8, sub_byte
from .relax_helpers import dtype_of, shape_of

R = relax.op

_INTEGER_RANGES = {
    TensorProto.UINT8: (0, 255), TensorProto.INT8: (-128, 127), TensorProto.UINT16: (0, 65535),
    TensorProto.INT16: (-32768, 32767), TensorProto.UINT4: (0, 15), TensorProto.INT4: (-8, 7),
    TensorProto.UINT2: (0, 3), TensorProto.INT2: (-2, 1),
}
LOW_PRECISION_TYPES = sub_byte.SUB_BYTE_TYPES | float8.LOW_PRECISION_TYPES


def _broadcast_param(bb, param: relax.Expr, x_shape: tuple[int, ...], axis: int, block_size: int) -> relax.Expr:
    """The scale or zero point made broadcastable to x (onnx's _quant_utils.reshape_input)."""
    shape = shape_of(param)
    if len(shape) == 0:
        return param
    if int(np.prod(shape)) == 1:
        return bb.normalize(R.reshape(param, ()))
    if not block_size:
        dims = [1] * len(x_shape)
        dims[axis] = shape[0]
        return bb.normalize(R.reshape(param, dims))
    repeated = bb.normalize(R.repeat(param, block_size, axis=axis))
    if shape_of(repeated)[axis] != x_shape[axis]:  # block_size does not divide x's size: the last block is short
        repeated = bb.normalize(R.strided_slice(repeated, axes=[axis], begin=[0], end=[x_shape[axis]]))
    return repeated


def _axis(attr: dict, rank: int) -> int:
    axis = int(attr.get("axis", 1))
    if rank <= 1 and axis == 1:  # the default axis of a scalar or 1-D x (TVM's converters do the same)
        axis = 0
    return axis % rank if rank else 0


def _elem_type(attr: dict, zero_point, default: int) -> int:
    if sub_byte.ELEM_TYPE_ATTRIBUTE in attr:
        return int(attr[sub_byte.ELEM_TYPE_ATTRIBUTE])
    if attr.get("output_dtype"):
        return int(attr["output_dtype"])
    if zero_point is not None:
        return _onnx_type(dtype_of(zero_point))
    return default


def _onnx_type(dtype: str) -> int:
    from onnx.helper import np_dtype_to_tensor_dtype

    return np_dtype_to_tensor_dtype(np.dtype(dtype))


def _is_ours(attr: dict) -> bool:
    return sub_byte.ELEM_TYPE_ATTRIBUTE in attr or int(attr.get("block_size", 0)) > 0


def _as_float32(bb, x: relax.Expr) -> relax.Expr:
    if dtype_of(x) in float8.FLOAT8_TYPES:
        return float8.decode(bb, x)
    return bb.normalize(R.astype(x, "float32"))


def quantize(bb, inputs, attr) -> relax.Expr:
    x, scale = inputs[0], inputs[1]
    zero_point = inputs[2] if len(inputs) > 2 and inputs[2] is not None else None
    x_shape = shape_of(x)
    axis = _axis(attr, len(x_shape))
    block_size = int(attr.get("block_size", 0))
    elem_type = _elem_type(attr, zero_point, TensorProto.UINT8)
    scale = _broadcast_param(bb, scale, x_shape, axis, block_size)
    if dtype_of(scale) != dtype_of(x):  # numpy promotes the division to the wider type
        wide = "float32" if {dtype_of(scale), dtype_of(x)} <= {"float16", "bfloat16", "float32"} else "float64"
        x, scale = (bb.normalize(R.astype(v, wide)) for v in (x, scale))
    scaled = bb.normalize(R.divide(x, scale))
    if zero_point is not None:
        zero_point = _broadcast_param(bb, zero_point, x_shape, axis, block_size)
    if elem_type in _INTEGER_RANGES:
        low, high = _INTEGER_RANGES[elem_type]
        # Clamped first so that rounding works on small numbers; every value past the range saturates anyway.
        limit = float(2 ** 20)
        wide = "float64" if dtype_of(scaled) == "float64" else "float32"
        value = bb.normalize(R.clip(R.astype(scaled, wide), -limit, limit))
        value = sub_byte.round_half_to_even(bb, value)
        if zero_point is not None:
            value = R.add(value, R.astype(zero_point, wide))
        out = sub_byte.carrier_dtype(elem_type) if elem_type in sub_byte.SUB_BYTE_TYPES else _np_name(elem_type)
        return bb.normalize(R.astype(R.clip(value, low, high), out))
    if elem_type in float8.LOW_PRECISION_TYPES:
        return float8.encode(bb, bb.normalize(R.astype(scaled, "float32")), _np_name(elem_type),
                             bool(attr.get("saturate", 1)))
    if elem_type == TensorProto.FLOAT4E2M1:
        if zero_point is not None:
            scaled = bb.normalize(R.add(R.astype(scaled, "float32"), R.astype(zero_point, "float32")))
        return sub_byte.round_to_float4(bb, scaled)
    raise TvmcompressError(f"QuantizeLinear to element type {elem_type} is not supported: quantize to int8 or uint8")


def dequantize(bb, inputs, attr) -> relax.Expr:
    x, scale = inputs[0], inputs[1]
    zero_point = inputs[2] if len(inputs) > 2 and inputs[2] is not None else None
    x_shape = shape_of(x)
    axis = _axis(attr, len(x_shape))
    block_size = int(attr.get("block_size", 0))
    elem_type = _elem_type(attr, None, _onnx_type(dtype_of(x)) if dtype_of(x) not in float8.FLOAT8_TYPES else 0)
    value = _as_float32(bb, x)
    # float8 and float4 zero points are zero by the spec, and onnx's reference does not subtract them.
    zero_is_zero = (elem_type in float8.LOW_PRECISION_TYPES or elem_type == TensorProto.FLOAT4E2M1
                    or dtype_of(x) in float8.FLOAT8_TYPES)
    if zero_point is not None and not zero_is_zero:
        zero_point = _broadcast_param(bb, zero_point, x_shape, axis, block_size)
        value = bb.normalize(R.subtract(value, _as_float32(bb, zero_point)))
    out_dtype = get_type(int(attr["output_dtype"])) if attr.get("output_dtype") else dtype_of(scale)
    scale = _broadcast_param(bb, scale, x_shape, axis, block_size)
    return bb.normalize(R.astype(R.multiply(value, R.astype(scale, "float32")), out_dtype))


def _np_name(elem_type: int) -> str:
    from onnx.helper import tensor_dtype_to_np_dtype

    return np.dtype(tensor_dtype_to_np_dtype(elem_type)).name


def _precision_form(node, op: str) -> str | None:
    for a in node.attribute:
        if a.name == "precision" and a.i:
            return f"{op}(precision={a.i})"
    return None


def _ours_or_tvms(ours, tvms):
    """A converter that takes the forms `_is_ours` claims and hands every other form to TVM's converter."""

    def converted(bb, inputs, attr, params):
        if _is_ours(attr):
            return ours(bb, inputs, attr)
        return tvms(bb, inputs, attr, params)

    return converted


class QuantizeLinear(OnnxOpConverter):
    """TVM's converter, except for sub-byte, float8 and blocked forms (see the module docstring)."""

    low_precision_types = LOW_PRECISION_TYPES

    @classmethod
    def unsupported_form(cls, node):
        return _precision_form(node, "QuantizeLinear")

    @classmethod
    def get_converter(cls, opset):
        return _ours_or_tvms(quantize, tvm_onnx.QuantizeLinear.get_converter(opset))


class DequantizeLinear(OnnxOpConverter):
    """TVM's converter, except for sub-byte, float8 and blocked forms (see the module docstring)."""

    low_precision_types = LOW_PRECISION_TYPES

    @classmethod
    def get_converter(cls, opset):
        return _ours_or_tvms(dequantize, tvm_onnx.DequantizeLinear.get_converter(opset))
