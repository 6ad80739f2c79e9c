import numpy as np
import tvm
from quant_helpers import run
from tvm.script import ir as I
from tvm.script import relax as R

from tvmcompress.passes.quantize_weights import QuantizeWeights, quantize_per_channel

# Output channel 0 has max|w| 1.27 (scale 0.01), channel 1 has 0.5 (scale 0.5/127); no value lands on .5.
W = np.array([[1.27, -0.5], [0.5, 0.125]], np.float32)
W_Q = np.array([[127, -127], [50, 32]], np.int8)
W_SCALE = np.array([np.float32(1.27) / 127, np.float32(0.5) / 127], np.float32)


@I.ir_module
class Before:
    @R.function
    def main(x: R.Tensor((1, 2), "float32")) -> R.Tensor((1, 2), "float32"):
        with R.dataflow():
            y = R.matmul(x, R.const(W))
            R.output(y)
        return y


@I.ir_module
class Expected:
    @R.function
    def main(x: R.Tensor((1, 2), "float32")) -> R.Tensor((1, 2), "float32"):
        with R.dataflow():
            w = R.dequantize(R.const(W_Q), R.const(W_SCALE), R.const(np.zeros(2, np.int8)), axis=1, out_dtype="float32")
            y = R.matmul(x, w)
            R.output(y)
        return y


def test_quantize_weights_per_output_channel():
    tvm.ir.assert_structural_equal(QuantizeWeights()(Before), Expected)


def test_quantize_weights_numerics_within_half_step():
    x = np.array([[0.3, -2.0]], np.float32)
    # Each weight moves by at most half its channel's step: |dy_c| <= sum_k |x_k| * scale_c / 2.
    bound = np.abs(x).sum() * W_SCALE / 2
    assert np.all(np.abs(run(QuantizeWeights()(Before), x) - x @ W) <= bound + 1e-6)


def test_quantize_weights_skips_excluded_layer():
    tvm.ir.assert_structural_equal(QuantizeWeights(exclude=("matmul_0",))(Before), Before)
    tvm.ir.assert_structural_equal(QuantizeWeights(exclude=("y",))(Before), Before)


def test_quantize_weights_skips_activation_times_activation():
    @I.ir_module
    class TwoInputs:
        @R.function
        def main(x: R.Tensor((1, 2), "float32"), w: R.Tensor((2, 2), "float32")) -> R.Tensor((1, 2), "float32"):
            with R.dataflow():
                y = R.matmul(x, w)
                R.output(y)
            return y

    tvm.ir.assert_structural_equal(QuantizeWeights()(TwoInputs), TwoInputs)


def test_conv_channel_axis_follows_kernel_layout():
    weight = np.random.default_rng(0).normal(size=(3, 3, 2, 4)).astype(np.float32)  # HWIO: O is axis 3
    q, scale = quantize_per_channel(weight, axis=3)
    assert scale.shape == (4,) and np.all(np.abs(q).max(axis=(0, 1, 2)) == 127)
    np.testing.assert_allclose(q * scale, weight, atol=scale.max() / 2 + 1e-7)


def test_quantize_weights_7_bit_for_avx2():
    # weight_bits=7 (x86 without VNNI): values in [-63, 63], scale max|W_c| / 63; 0.5 / (0.5 / 63) * 0.125 = 15.75.
    w_q7 = np.array([[63, -63], [25, 16]], np.int8)
    scale7 = np.array([np.float32(1.27) / 63, np.float32(0.5) / 63], np.float32)

    @I.ir_module
    class Expected7:
        @R.function
        def main(x: R.Tensor((1, 2), "float32")) -> R.Tensor((1, 2), "float32"):
            with R.dataflow():
                w = R.dequantize(R.const(w_q7), R.const(scale7), R.const(np.zeros(2, np.int8)), axis=1,
                                 out_dtype="float32")
                y = R.matmul(x, w)
                R.output(y)
            return y

    tvm.ir.assert_structural_equal(QuantizeWeights(bits=7)(Before), Expected7)
    rng = np.random.default_rng(0)
    q, _ = quantize_per_channel(rng.standard_normal((64, 32)).astype(np.float32), axis=1, bits=7)
    assert q.min() == -63 and q.max() == 63
