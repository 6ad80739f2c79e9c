import numpy as np
import tvm
from quant_helpers import run
from tvm.script import ir as I
from tvm.script import relax as R

from tvmcompress.passes.quantize_dynamic import QuantizeDynamic
from tvmcompress.passes.quantize_weights import quantize_per_channel

W = np.random.default_rng(0).normal(size=(4, 2)).astype(np.float32)
W_Q, S_W = quantize_per_channel(W, axis=1)


@I.ir_module
class Before:
    @R.function
    def main(x: R.Tensor((1, 4), "float32")) -> R.Tensor((1, 2), "float32"):
        with R.dataflow():
            y = R.matmul(x, R.const(W))
            R.output(y)
        return y


@I.ir_module
class Expected:
    @R.function
    def main(x: R.Tensor((1, 4), "float32")) -> R.Tensor((1, 2), "float32"):
        with R.dataflow():
            magnitude = R.abs(x)
            absmax = R.max(magnitude)
            step = R.divide(absmax, R.const(127.0, "float32"))
            scale = R.maximum(step, R.const(1e-8, "float32"))
            xq = R.quantize(x, scale, R.const(0, "int8"), axis=-1, out_dtype="int8")
            acc = R.matmul(xq, R.const(W_Q), out_dtype="int32")
            acc_f = R.astype(acc, "float32")
            out_scale = R.multiply(scale, R.const(S_W.reshape(1, 2)))
            y = R.multiply(acc_f, out_scale)
            R.output(y)
        return y


def test_quantize_dynamic_matmul():
    tvm.ir.assert_structural_equal(QuantizeDynamic()(Before), Expected)


def test_quantize_dynamic_numerics():
    x = np.random.default_rng(1).normal(size=(1, 4)).astype(np.float32)
    s_x = np.abs(x).max() / 127
    x_fq = np.round(x / s_x) * s_x
    w_fq = W_Q.astype(np.float32) * S_W
    # Integer accumulation is exact; the result equals fake quantization up to float rounding.
    np.testing.assert_allclose(run(QuantizeDynamic()(Before), x), x_fq @ w_fq, rtol=1e-5, atol=1e-6)


def test_quantize_dynamic_skips_excluded_and_zero_input_is_finite():
    tvm.ir.assert_structural_equal(QuantizeDynamic(exclude=("matmul_0",))(Before), Before)
    assert np.all(run(QuantizeDynamic()(Before), np.zeros((1, 4), np.float32)) == 0)
