"""MatMulInteger, ConvInteger and DynamicQuantizeLinear: the ops of onnxruntime's dynamic quantization.

MatMulInteger / ConvInteger give the exact int32 accumulator of the zero-point-shifted 8-bit operands, with the
8-bit tensors fed to the matmul / conv2d as they are (see quantized.integer_matmul / integer_conv2d); TVM's own
MatMulInteger widens both operands to int32 first, which our int8 schedules do not take.

DynamicQuantizeLinear follows the spec's formula: scale = (max(x, 0) - min(x, 0)) / 255, zero point =
saturate(rint(-min / scale)), y = saturate(rint(x / scale) + zero point), rounding half to even. TVM's converter
builds it from relax.quantize with a run-time scale, which its CPU pipeline fails to compile (IndexError).
An all-zero x gives scale 1 and y = zero point = 0, as onnxruntime does (the spec's formula divides by 0).
"""

from __future__ import annotations

from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from .quantized import integer_conv2d, integer_matmul
from .relax_helpers import const

R = relax.op


class MatMulInteger(OnnxOpConverter):
    @classmethod
    def _impl_v10(cls, bb, inputs, attr, params):
        a, b, a_zp, b_zp = (list(inputs) + [None] * 4)[:4]
        return integer_matmul(bb, a, a_zp, b, b_zp)


class ConvInteger(OnnxOpConverter):
    @classmethod
    def _impl_v10(cls, bb, inputs, attr, params):
        x, w, x_zp, w_zp = (list(inputs) + [None] * 4)[:4]
        return integer_conv2d(bb, x, x_zp, w, w_zp, attr)


class DynamicQuantizeLinear(OnnxOpConverter):
    @classmethod
    def _impl_v11(cls, bb, inputs, attr, params):
        x = inputs[0]
        zero = const(0.0, "float32")
        high = bb.normalize(R.maximum(R.max(x), zero))
        low = bb.normalize(R.minimum(R.min(x), zero))
        scale = bb.normalize(R.divide(R.subtract(high, low), const(255.0, "float32")))
        # A zero range: scale 1 instead of 0 (onnxruntime's choice), so that y and the zero point come out 0.
        safe = bb.normalize(R.where(R.equal(scale, zero), const(1.0, "float32"), scale))
        zero_point = bb.normalize(R.clip(R.round(R.negative(R.divide(low, safe))), 0, 255))
        # NOTE: R.round lowers to LLVM's nearbyint (half to even, checked on 0.27), the spec's rounding.
        y = R.clip(R.add(R.round(R.divide(x, safe)), zero_point), 0, 255)
        return relax.Tuple([
            bb.normalize(R.astype(y, "uint8")), safe, bb.normalize(R.astype(zero_point, "uint8")),
        ])
