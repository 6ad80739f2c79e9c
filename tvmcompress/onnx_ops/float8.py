"""Cast and CastLike to and from the float8 types (FLOAT8E4M3FN, FLOAT8E4M3FNUZ, FLOAT8E5M2, FLOAT8E5M2FNUZ).

TVM 0.27 stores float8 tensors (as bytes) but converts them wrongly on CPU: it flushes subnormals, wraps values
past the largest finite one (1e5 -> -1.5 in e4m3fn) and reads the `fnuz` types with the bias of the `fn` ones.
So the conversions are written here in integer-exact arithmetic, and TVM only moves the bytes:

- float8 -> float: the byte (`reinterpret` to uint8) indexes a 256-entry float32 table of the type's values,
  made by ml_dtypes at import (ml_dtypes is onnx's own reference for these types); then TVM's Cast.
- float -> float8: x as float32 (exact for float16 / bfloat16 inputs), then on its bits: the exponent e clamped
  to the type's normal range (so subnormals share the smallest), the significand shifted down to the type's
  mantissa, rounded half to even, gives n; the code (e - e_min) * 2^m + n is the byte of |x|, in order,
  subnormals included. Codes past the largest finite value (and infinities) follow ONNX's `saturate`: the
  largest finite value, or the type's inf / NaN. Then the sign bit, and `reinterpret` to the float8 type.

Casts to the sub-byte types (int4, uint4, int2, uint2, float4e2m1) and to float8e8m0 are sub_byte.cast_to;
casts from them read their carrier (sub_byte.py). Other element types go to TVM's own Cast converter. float8
and sub-byte tensors in other ops (but Quantize/DequantizeLinear, quantize_linear.py) stay rejected by name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import ml_dtypes
import numpy as np
import onnx
from tvm import relax, tirx, topi
from tvm.script import tirx as T
from tvm.relax.frontend.onnx.onnx_frontend import Cast as _TvmCast
from tvm.relax.frontend.onnx.onnx_frontend import get_type

from ..errors import TvmcompressError
from . import sub_byte
from .relax_helpers import dtype_of, shape_of

R = relax.op


@dataclass(frozen=True)
class _Float8:
    """The layout of one float8 type: mantissa bits, normal exponent range, and its special codes (positive)."""

    mantissa: int
    exp_min: int  # exponent of the smallest normal value; subnormals are multiples of 2^(exp_min - mantissa)
    exp_max: int  # exponent of the largest finite value
    max_code: int  # byte of the largest finite value
    overflow_code: int  # byte of what a value past the largest becomes without saturation (inf, else NaN)
    nan_code: int
    signed_zero: bool  # the fnuz types have no -0: 0x80 is their NaN


FLOAT8_TYPES: dict[str, _Float8] = {
    "float8_e4m3fn": _Float8(3, -6, 8, 0x7E, 0x7F, 0x7F, True),
    "float8_e4m3fnuz": _Float8(3, -7, 7, 0x7F, 0x80, 0x80, False),
    "float8_e5m2": _Float8(2, -14, 15, 0x7B, 0x7C, 0x7F, True),
    "float8_e5m2fnuz": _Float8(2, -15, 15, 0x7F, 0x80, 0x80, False),
}
# Sources whose values float32 holds exactly, so that rounding them once to float8 is rounding x itself.
_EXACT_IN_FLOAT32 = ("float32", "float16", "bfloat16", "int8", "uint8", "int16", "uint16", "bool")

LOW_PRECISION_TYPES = frozenset(
    getattr(onnx.TensorProto, name) for name in ("FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ")
)


def _reinterpret(bb, x: relax.Expr, dtype: str) -> relax.Expr:
    return bb.emit_te(topi.reinterpret, x, dtype)


def decode(bb, x: relax.Expr) -> relax.Expr:
    """A float8 tensor's values as float32 (exact)."""
    dtype = dtype_of(x)
    table = np.arange(256, dtype=np.uint8).view(getattr(ml_dtypes, dtype)).astype(np.float32)
    index = R.astype(_reinterpret(bb, x, "uint8"), "int32")
    return bb.normalize(R.take(relax.const(table), index, axis=0))


def encode(bb, x: relax.Expr, dtype: str, saturate: bool) -> relax.Expr:
    """float32 x rounded half to even to the float8 type `dtype`, with ONNX's saturation rule."""
    shape = shape_of(x)
    size = math.prod(shape)
    func = _encode_func(size, FLOAT8_TYPES[dtype], saturate)
    gvar = bb.add_func(func, f"float8_encode_{dtype.removeprefix('float8_')}")
    flat = bb.normalize(R.reshape(x, (size,)))
    codes = bb.emit(relax.call_tir(gvar, [flat], relax.TensorType((size,), "uint8")))
    return _reinterpret(bb, bb.normalize(R.reshape(codes, shape)), dtype)


def _encode_func(size: int, f8: _Float8, saturate: bool) -> tirx.PrimFunc:
    """A loop over `size` float32 values writing their uint8 codes. Written as statements with one `let` per
    intermediate value: as one elementwise expression, inlining repeats the values that are used more than
    once, and the expression (and TVM's lowering passes on it) grows exponentially."""
    m, exp_min, exp_max, max_code = f8.mantissa, f8.exp_min, f8.exp_max, f8.max_code
    overflow = f8.max_code if saturate else f8.overflow_code
    nan_code, signed_zero = f8.nan_code, int(f8.signed_zero)

    @T.prim_func(private=True, s_tir=True)
    def encode(x: T.Buffer((size,), "float32"), y: T.Buffer((size,), "uint8")):
        T.func_attr({"op_pattern": 8, "tirx.noalias": True})  # opaque: FuseOps leaves it alone
        with T.sblock("float8_encode"):
            for i in range(size):
                bits: T.int64 = T.Cast("int64", T.reinterpret("uint32", x[i]))
                a: T.int64 = bits & T.int64(0x7FFFFFFF)
                exp32: T.int64 = a >> T.int64(23)
                # The significand with its hidden bit, and the exponent (float32 subnormals: -126, no hidden bit).
                sig: T.int64 = (a & T.int64(0x7FFFFF)) | T.Select(exp32 > T.int64(0), T.int64(0x800000), T.int64(0))
                e: T.int64 = T.Select(exp32 > T.int64(0), exp32 - T.int64(127), T.int64(-126))
                # Below the smallest normal exponent the quantum stays 2^(exp_min - m): subnormals.
                ec: T.int64 = T.max(T.min(e, T.int64(exp_max)), T.int64(exp_min))
                # |x| / 2^(ec - m) = sig / 2^shift; shift >= 23 - m when e <= exp_max (else overflow, below).
                shift: T.int64 = T.min(T.max(T.int64(23 - m) + ec - e, T.int64(1)), T.int64(25))
                low: T.int64 = sig >> shift
                rem: T.int64 = sig & ((T.int64(1) << shift) - T.int64(1))
                half: T.int64 = T.int64(1) << (shift - T.int64(1))
                up: T.int64 = T.Select(rem > half or (rem == half and (low & T.int64(1)) == T.int64(1)), T.int64(1), T.int64(0))
                code: T.int64 = (ec - T.int64(exp_min)) * T.int64(2**m) + low + up
                past: T.bool = a >= T.int64(0x7F800000) or e > T.int64(exp_max) or code > T.int64(max_code)
                finite: T.int64 = T.Select(past, T.int64(overflow), code)
                coded: T.int64 = T.Select(a > T.int64(0x7F800000), T.int64(nan_code), finite)
                # The sign, -0 included; not on NaN, and never on a fnuz zero or NaN (0x80 is their NaN).
                negative: T.bool = (bits >> T.int64(31)) == T.int64(1) and a <= T.int64(0x7F800000) and (
                    signed_zero == 1 or (coded != T.int64(0) and coded != T.int64(nan_code)))
                y[i] = T.Cast("uint8", coded | T.Select(negative, T.int64(0x80), T.int64(0)))

    return encode


def convert(bb, x: relax.Expr, to: str, saturate: bool, params) -> relax.Expr:
    """Cast x to `to`, either side possibly a float8 type."""
    source = dtype_of(x)
    if source not in FLOAT8_TYPES and to not in FLOAT8_TYPES:
        return _TvmCast._impl_v13(bb, [x], {"to": to}, params)
    if source in FLOAT8_TYPES:
        x = decode(bb, x)
        if to not in FLOAT8_TYPES:
            return _TvmCast._impl_v13(bb, [x], {"to": to}, params)
    elif source not in _EXACT_IN_FLOAT32:
        raise TvmcompressError(
            f"Cast from {source} to {to} is not supported (float32 would round it before float8 does): cast the "
            "input to float32 first"
        )
    else:
        x = bb.normalize(R.astype(x, "float32"))
    return encode(bb, x, to, saturate)


class Cast:
    """ONNX Cast (all opsets), float8 included; other types as TVM converts them."""

    low_precision_types = LOW_PRECISION_TYPES | sub_byte.CARRIED_TYPES

    @classmethod
    def get_converter(cls, opset):
        return cls._impl

    @classmethod
    def _impl(cls, bb, inputs, attr, params):
        if attr["to"] in sub_byte.CARRIED_TYPES:
            round_mode = attr.get("round_mode", "up")
            round_mode = round_mode.decode() if isinstance(round_mode, bytes) else str(round_mode)
            return sub_byte.cast_to(bb, inputs[0], attr["to"], bool(attr.get("saturate", 1)), round_mode)
        return convert(bb, inputs[0], get_type(attr["to"]), bool(attr.get("saturate", 1)), params)


class CastLike:
    """ONNX CastLike (opset 15+): Cast to the element type of its second input, float8 included."""

    first_opset = 15
    # A sub-byte or float8e8m0 `like` never reaches _impl: sub_byte.lower_model makes that CastLike a Cast.
    low_precision_types = LOW_PRECISION_TYPES | sub_byte.CARRIED_TYPES

    @classmethod
    def get_converter(cls, opset):
        return cls._impl

    @classmethod
    def _impl(cls, bb, inputs, attr, params):
        to = "int64" if isinstance(inputs[1], relax.ShapeExpr) else dtype_of(inputs[1])
        return convert(bb, inputs[0], to, bool(attr.get("saturate", 1)), params)
