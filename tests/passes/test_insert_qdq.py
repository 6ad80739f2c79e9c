import numpy as np
import tvm
from quant_helpers import fake_quant, run
from tvm.script import ir as I
from tvm.script import relax as R

from tvmcompress.passes.insert_qdq import InsertQDQ
from tvmcompress.passes.quantize_config import QParams

W = np.random.default_rng(0).normal(size=(16, 8)).astype(np.float32)


@I.ir_module
class Before:
    @R.function
    def main(x: R.Tensor((1, 16), "float32")) -> R.Tensor((1, 8), "float32"):
        with R.dataflow():
            y = R.matmul(x, R.const(W))
            R.output(y)
        return y


@I.ir_module
class Expected:
    @R.function
    def main(x: R.Tensor((1, 16), "float32")) -> R.Tensor((1, 8), "float32"):
        with R.dataflow():
            xq = R.quantize(x, R.const(0.05, "float32"), R.const(0, "int8"), axis=-1, out_dtype="int8")
            xd = R.dequantize(xq, R.const(0.05, "float32"), R.const(0, "int8"), axis=-1, out_dtype="float32")
            y = R.matmul(xd, R.const(W))
            R.output(y)
        return y


def test_insert_qdq_wraps_calibrated_matmul():
    tvm.ir.assert_structural_equal(InsertQDQ({"x": QParams(scale=0.05)})(Before), Expected)


def test_insert_qdq_numerics_are_fake_quantization():
    x = np.random.default_rng(1).normal(size=(1, 16)).astype(np.float32)
    after = InsertQDQ({"x": QParams(scale=0.05, zero_point=3)})(Before)
    # Same float ops on the fake-quantized input: only summation order may differ.
    np.testing.assert_allclose(run(after, x), fake_quant(x, 0.05, 3) @ W, rtol=1e-5, atol=1e-5)


def test_insert_qdq_skips_uncalibrated_matmul():
    tvm.ir.assert_structural_equal(InsertQDQ({})(Before), Before)


def test_insert_qdq_skips_excluded_layer():
    tvm.ir.assert_structural_equal(InsertQDQ({"x": QParams(0.05)}, exclude=("matmul_0",))(Before), Before)


def test_insert_qdq_uint8_zero_point_dtype():
    after = InsertQDQ({"x": QParams(scale=0.05, zero_point=128, dtype="uint8")})(Before)
    quantize = after["main"].body.blocks[0].bindings[0].value
    assert quantize.op.name == "relax.quantize" and str(quantize.attrs.out_dtype) == "uint8"
    assert quantize.args[2].value.numpy() == 128
