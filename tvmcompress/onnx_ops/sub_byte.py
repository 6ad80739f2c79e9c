"""Sub-byte element types (INT4, UINT4, INT2, UINT2, FLOAT4E2M1), and FLOAT8E8M0, carried in wider dtypes.

TVM 0.27 cannot hold sub-byte tensors (nor convert float8e8m0). Every such value is carried in the library
dtype that holds it exactly (tvmcompress/sub_byte_io.py: int4 / int2 -> int8, uint4 / uint2 -> uint8,
float4e2m1 and float8e8m0 -> float32), so ops that only read values (Cast from int4, DequantizeLinear of int4)
are TVM's own ops on the carrier. What has to know the carried type is written here:

- `lower_model`: in the copy of the model that is imported, graph inputs, outputs and value_info of sub-byte
  types get the carrier type, sub-byte initializers are converted, CastLike to a sub-byte `like` becomes
  Cast(to=type) (the carrier no longer says the type), and QuantizeLinear / DequantizeLinear nodes on a
  sub-byte or float8 type get the private attribute ELEM_TYPE_ATTRIBUTE naming it (their zero point may be a
  carrier, or absent).
- `cast_to`: Cast to int4 / uint4 / int2 / uint2 is a C cast to an integer (floats truncate toward zero), then
  the low 4 or 2 bits as two's complement (ONNX: an integer out of range discards its higher bits; a float out
  of range is undefined, and onnx's reference, ml_dtypes, wraps it the same way). Cast to float4e2m1 rounds half
  to even to the values 0, 0.5, 1, 1.5, 2, 3, 4, 6, saturating at 6 (float4e2m1 has no inf); NaN gives a zero
  with the opposite sign bit, as ml_dtypes (onnx's reference) does.
- Cast to float8e8m0 (a power of two 2^(e - 127), e = 0..254, or NaN) follows onnx's reference
  (`onnx.numpy_helper.to_float8e8m0`) on the float32 bits: the exponent field, plus one by `round_mode` (up: any
  mantissa bit; nearest: the reference's guard / round / sticky rule; down: never), kept at 254 with `saturate`;
  inf and NaN give NaN; the sign is ignored (negative values are undefined by the spec).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper
from tvm import relax, topi

from ..onnx_graphs import value_types
from ..sub_byte_io import LIBRARY_DTYPES
from .relax_helpers import const, dtype_of

R = relax.op

# ONNX sub-byte element type -> the ONNX type of its carrier.
CARRIER_TYPES: dict[int, int] = {
    TensorProto.INT4: TensorProto.INT8,
    TensorProto.UINT4: TensorProto.UINT8,
    TensorProto.INT2: TensorProto.INT8,
    TensorProto.UINT2: TensorProto.UINT8,
    TensorProto.FLOAT4E2M1: TensorProto.FLOAT,
    TensorProto.FLOAT8E8M0: TensorProto.FLOAT,
}
CARRIED_TYPES = frozenset(CARRIER_TYPES)  # Cast and CastLike convert these
SUB_BYTE_TYPES = CARRIED_TYPES - {TensorProto.FLOAT8E8M0}  # Quantize/DequantizeLinear also take these
_FLOAT8_TYPES = frozenset({TensorProto.FLOAT8E4M3FN, TensorProto.FLOAT8E4M3FNUZ, TensorProto.FLOAT8E5M2,
                           TensorProto.FLOAT8E5M2FNUZ})
# Set by lower_model on Q / DQ nodes of these types: the output type of QuantizeLinear, the input type of
# DequantizeLinear. Read by quantize_linear.py, which takes those nodes from TVM's converters.
ELEM_TYPE_ATTRIBUTE = "tvmcompress_elem_type"
_INTEGER_BITS = {TensorProto.INT4: (4, True), TensorProto.UINT4: (4, False), TensorProto.INT2: (2, True),
                 TensorProto.UINT2: (2, False)}
FLOAT4_MAX = 6.0


def carrier_dtype(elem_type: int) -> str:
    """The dtype (numpy name) that carries values of the sub-byte ONNX type `elem_type`."""
    return LIBRARY_DTYPES[_np_name(elem_type)]


def _np_name(elem_type: int) -> str:
    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)).name


# ------------------------------------------------------------------------------------------ model lowering


def lower_model(model: onnx.ModelProto, graphs) -> None:
    """Rewrite `model` (a copy made for import) in place as described in the module docstring; `graphs` are its
    graphs (main and subgraphs)."""
    for graph in graphs:
        types = value_types(graph)
        for node in graph.node:
            if node.domain not in ("", "ai.onnx"):
                continue
            if node.op_type == "CastLike" and types.get(node.input[1]) in CARRIED_TYPES:
                saturate = [a for a in node.attribute if a.name in ("saturate", "round_mode")]
                to = types[node.input[1]]
                del node.input[1:]
                del node.attribute[:]
                node.op_type = "Cast"
                node.attribute.append(onnx.helper.make_attribute("to", to))
                node.attribute.extend(saturate)
            elif node.op_type in ("QuantizeLinear", "DequantizeLinear"):
                name = node.output[0] if node.op_type == "QuantizeLinear" else node.input[0]
                elem_type = types.get(name)
                if elem_type in SUB_BYTE_TYPES or elem_type in _FLOAT8_TYPES:
                    node.attribute.append(onnx.helper.make_attribute(ELEM_TYPE_ATTRIBUTE, elem_type))
        for info in list(graph.input) + list(graph.output) + list(graph.value_info):
            tensor_type = info.type.tensor_type
            if info.type.HasField("tensor_type") and tensor_type.elem_type in CARRIED_TYPES:
                tensor_type.elem_type = CARRIER_TYPES[tensor_type.elem_type]
        for index, tensor in enumerate(graph.initializer):
            if tensor.data_type in CARRIED_TYPES:
                array = numpy_helper.to_array(tensor).astype(carrier_dtype(tensor.data_type))
                graph.initializer[index].CopyFrom(numpy_helper.from_array(array, tensor.name))



# ------------------------------------------------------------------------------------------------ casts


def cast_to(bb, x: relax.Expr, elem_type: int, saturate: bool = True, round_mode: str = "up") -> relax.Expr:
    """Cast `x` (any carrier, float or integer tensor) to the carried ONNX type `elem_type`, as its carrier."""
    from .float8 import FLOAT8_TYPES, decode

    if dtype_of(x) in FLOAT8_TYPES:
        x = decode(bb, x)
    if elem_type == TensorProto.FLOAT8E8M0:
        return round_to_float8e8m0(bb, x, saturate, round_mode)
    if elem_type == TensorProto.FLOAT4E2M1:
        return round_to_float4(bb, x)
    bits, signed = _INTEGER_BITS[elem_type]
    # A C cast: floats truncate toward zero, integers keep their value (uint64 past 2^63 wraps, and so keeps its
    # low bits, which are all that is kept).
    value = bb.normalize(R.astype(x, "int64"))
    modulus = 1 << bits
    if signed:
        half = modulus // 2
        wrapped = R.subtract(R.floor_mod(R.add(value, const(half, "int64")), const(modulus, "int64")),
                             const(half, "int64"))
    else:
        wrapped = R.floor_mod(value, const(modulus, "int64"))
    return bb.normalize(R.astype(wrapped, carrier_dtype(elem_type)))


def round_half_to_even(bb, x: relax.Expr) -> relax.Expr:
    """np.rint of a float tensor. floor(x) and x - floor(x) are exact in binary floating point, so the tie test
    is exact too (floor(x + 0.5) is not: 0.49999997f + 0.5f rounds to 1)."""
    dtype = dtype_of(x)
    low = bb.normalize(R.floor(x))
    fraction = bb.normalize(R.subtract(x, low))
    high = bb.normalize(R.add(low, const(1, dtype)))
    even_low = R.equal(R.floor_mod(low, const(2, dtype)), const(0, dtype))
    tie = R.where(even_low, low, high)
    return bb.normalize(R.where(R.greater(fraction, const(0.5, dtype)), high,
                                R.where(R.less(fraction, const(0.5, dtype)), low, tie)))


def round_to_float4(bb, x: relax.Expr) -> relax.Expr:
    """x rounded half to even to a float4e2m1 value, saturating at +-6, as float32 (see the module docstring)."""
    source = dtype_of(x)
    dtype = source if source in ("float32", "float64") else "float32"  # float16 / bfloat16 / ints: exact in f32
    x = bb.normalize(R.astype(x, dtype)) if source != dtype else x
    bits_dtype = "int32" if dtype == "float32" else "int64"
    negative = R.less(bb.emit_te(topi.reinterpret, x, bits_dtype), const(0, bits_dtype))  # -0.0 included
    is_nan = bb.normalize(R.isnan(x))
    # |x| clamped below 8 first: every value from 6 up (inf included) saturates, and the quotient stays small.
    magnitude = bb.normalize(R.minimum(R.abs(x), const(8.0, dtype)))
    # The spacing of float4e2m1 values: 0.5 below 2 (subnormals 0, 0.5 and 1, 1.5), then 1 below 4, then 2.
    step = bb.normalize(R.where(R.less(magnitude, const(2.0, dtype)), const(0.5, dtype),
                                R.where(R.less(magnitude, const(4.0, dtype)), const(1.0, dtype), const(2.0, dtype))))
    rounded = R.multiply(round_half_to_even(bb, bb.normalize(R.divide(magnitude, step))), step)
    rounded = bb.normalize(R.where(is_nan, const(0.0, dtype), R.minimum(rounded, const(FLOAT4_MAX, dtype))))
    # (R.not_equal on two bools lowers to an fcmp on i1, which LLVM rejects.)
    flipped = R.where(is_nan, R.logical_not(negative), negative)
    sign = R.where(flipped, const(-1.0, dtype), const(1.0, dtype))
    return bb.normalize(R.astype(R.multiply(rounded, sign), "float32"))


def round_to_float8e8m0(bb, x: relax.Expr, saturate: bool, round_mode: str) -> relax.Expr:
    """x as float8e8m0 (see the module docstring), carried as its float32 value."""
    if round_mode not in ("up", "down", "nearest"):
        from ..errors import TvmcompressError

        raise TvmcompressError(f"Cast(round_mode={round_mode}) is not supported: use up, down or nearest")
    x = bb.normalize(R.astype(x, "float32")) if dtype_of(x) != "float32" else x
    bits = bb.normalize(R.bitwise_and(R.astype(bb.emit_te(topi.reinterpret, x, "int32"), "int64"),
                                      const(0xFFFFFFFF, "int64")))

    def field(mask: int) -> relax.Expr:
        return R.greater(R.bitwise_and(bits, const(mask, "int64")), const(0, "int64"))

    exponent = bb.normalize(R.bitwise_and(R.right_shift(bits, const(23, "int64")), const(0xFF, "int64")))
    special = R.equal(exponent, const(0xFF, "int64"))
    if round_mode == "up":
        round_up = field(0x7FFFFF)
    elif round_mode == "nearest":  # the reference's rule, its `lsb` (exponent > 0) included
        lsb = R.greater(exponent, const(0, "int64"))
        round_up = R.logical_and(field(0x400000), R.logical_or(R.logical_or(field(0x200000), field(0x1FFFFF)), lsb))
    else:
        round_up = R.less(exponent, const(0, "int64"))  # never
    if saturate:
        round_up = R.logical_and(round_up, R.not_equal(exponent, const(0xFE, "int64")))
    code = bb.normalize(R.where(special, const(0xFF, "int64"),
                                R.add(exponent, R.astype(round_up, "int64"))))
    # The float32 bits of 2^(code - 127): a normal float32 with that exponent field, except code 0 (2^-127, the
    # subnormal 0x00400000) and 255 (NaN).
    value_bits = R.where(R.equal(code, const(0, "int64")), const(0x00400000, "int64"),
                         R.where(R.equal(code, const(0xFF, "int64")), const(0x7FC00000, "int64"),
                                 R.left_shift(code, const(23, "int64"))))
    return bb.emit_te(topi.reinterpret, bb.normalize(R.astype(value_bits, "int32")), "float32")
