"""DFT, which TVM 0.27 lacks, as two matmuls with constant cosine and sine matrices (shapes are static).

Covers the forward transform of real and complex signals (onesided too) and the inverse of complex spectra;
the one-sided inverse (irfft) is rejected at import. dft_length and axis must be constants.
"""

from __future__ import annotations

import numpy as np
from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from ..errors import TvmcompressError
from .relax_helpers import const, constant_value, dtype_of, shape_of

R = relax.op


class DFT(OnnxOpConverter):
    @classmethod
    def unsupported_form(cls, node):
        attrs = {a.name: a.i for a in node.attribute}
        if attrs.get("inverse", 0) and attrs.get("onesided", 0):
            return "DFT(inverse=1, onesided=1)"
        return None

    @classmethod
    def _impl_v17(cls, bb, inputs, attr, params):
        return _dft(bb, inputs[0], _constant_int(inputs, 1, "dft_length"), int(attr.get("axis", 1)), attr)

    @classmethod
    def _impl_v20(cls, bb, inputs, attr, params):
        axis = _constant_int(inputs, 2, "axis")
        return _dft(bb, inputs[0], _constant_int(inputs, 1, "dft_length"), -2 if axis is None else axis, attr)


def _constant_int(inputs, index: int, what: str) -> int | None:
    if len(inputs) <= index or inputs[index] is None:
        return None
    value = constant_value(inputs[index])
    if value is None:
        raise TvmcompressError(f"DFT with a {what} computed at run time is not supported: make {what} a constant")
    return int(np.asarray(value).reshape(-1)[0])


def _dft(bb, x, length, axis, attr):
    shape = shape_of(x)
    rank = len(shape)
    out_dtype = dtype_of(x)
    # float64 inside: the sums cancel heavily (a real signal's imaginary part), and onnx's reference (numpy's
    # FFT in complex128) keeps the exact residue of float32 inputs, which float32 sums lose.
    x = bb.normalize(R.astype(x, "float64"))
    dtype = "float64"
    axis = axis % rank
    inverse, onesided = int(attr.get("inverse", 0)), int(attr.get("onesided", 0))
    n = shape[axis]
    length = n if length is None else length
    bins = length // 2 + 1 if onesided else length

    def part(index):
        sliced = R.strided_slice(x, axes=[rank - 1], begin=[index], end=[index + 1])
        return bb.normalize(R.squeeze(sliced, axis=[rank - 1]))

    # Signal axis last: [..., n]; the matrices are [n, bins], with zero rows past `length` (truncation); zero
    # padding past n needs no rows.
    perm = [d for d in range(rank - 1) if d != axis] + [axis]
    inverse_perm = list(np.argsort(perm))
    real = bb.normalize(R.permute_dims(part(0), perm))
    imag = bb.normalize(R.permute_dims(part(1), perm)) if shape[-1] == 2 else None
    k = np.arange(bins).reshape(1, bins)
    t = np.arange(n).reshape(n, 1)
    angle = 2 * np.pi * ((t * k) % length) / length
    keep = (t < length).astype(np.float64)
    cos = const(np.cos(angle) * keep, dtype)
    sin = const(np.sin(angle) * keep, dtype)
    sign = 1 if inverse else -1  # exp(sign * i * angle)
    out_real = R.matmul(real, cos)
    out_imag = R.multiply(R.matmul(real, sin), const(sign, dtype))
    if imag is not None:
        out_real = R.subtract(out_real, R.multiply(R.matmul(imag, sin), const(sign, dtype)))
        out_imag = R.add(out_imag, R.matmul(imag, cos))
    if inverse:
        scale = const(1.0 / length, dtype)
        out_real, out_imag = R.multiply(out_real, scale), R.multiply(out_imag, scale)
    parts = [bb.normalize(R.permute_dims(bb.normalize(v), inverse_perm)) for v in (out_real, out_imag)]
    result = bb.normalize(R.concat([R.expand_dims(v, rank - 1) for v in parts], axis=rank - 1))
    return R.astype(result, out_dtype)


class _Window(OnnxOpConverter):
    """A window function of a constant size, as a constant: w[n] = sum_k a_k cos(2 pi k n / N), N = size for a
    periodic window and size - 1 for a symmetric one (in float64, then the output type)."""

    coefficients: tuple[float, ...] = ()

    @classmethod
    def _impl_v17(cls, bb, inputs, attr, params):
        from onnx.helper import tensor_dtype_to_np_dtype

        size = constant_value(inputs[0])
        if size is None:
            raise TvmcompressError(
                f"{cls.__name__} with a size computed at run time is not supported: make size a constant"
            )
        size = int(np.asarray(size).reshape(-1)[0])
        period = size if int(attr.get("periodic", 1)) else size - 1
        n = np.arange(size, dtype=np.float64)
        window = sum(a * np.cos(2 * np.pi * k * n / period) for k, a in enumerate(cls.coefficients))
        dtype = np.dtype(tensor_dtype_to_np_dtype(int(attr.get("output_datatype", 1))))
        return relax.const(np.asarray(window).astype(dtype), dtype.name)  # else float64 becomes float32


class HannWindow(_Window):
    coefficients = (0.5, -0.5)


class HammingWindow(_Window):
    coefficients = (25 / 46, -(1 - 25 / 46))


class BlackmanWindow(_Window):
    coefficients = (0.42, -0.5, 0.08)
