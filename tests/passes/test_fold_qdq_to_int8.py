import warnings

import numpy as np
import pytest
import tvm
from quant_helpers import run
from tvm.script import ir as I
from tvm.script import relax as R

from tvmcompress.passes.fold_qdq_to_int8 import FoldQDQToInt8
from tvmcompress.passes.insert_qdq import InsertQDQ
from tvmcompress.passes.quantize_config import QParams
from tvmcompress.passes.quantize_weights import QuantizeWeights

W_Q = np.array([[1, -2], [3, 4], [0, 1], [-1, 0]], np.int8)
S_W = np.array([0.25, 0.5], np.float32)
BIAS = np.array([1.0, -0.5], np.float32)
# s_x = 0.5, z_x = 3: scale = s_x * s_w = [0.125, 0.25]; k = round(bias / scale) - z_x * colsum(W_Q)
#   = [8, -2] - 3 * [3, 3] = [-1, -11].
K = np.array([[-1, -11]], np.int32)
SCALE = np.array([[0.125, 0.25]], np.float32)


@I.ir_module
class Before:
    @R.function
    def main(x: R.Tensor((1, 4), "float32")) -> R.Tensor((1, 2), "float32"):
        with R.dataflow():
            w = R.dequantize(R.const(W_Q), R.const(S_W), R.const(np.zeros(2, np.int8)), axis=1, out_dtype="float32")
            xq = R.quantize(x, R.const(0.5, "float32"), R.const(3, "int8"), axis=-1, out_dtype="int8")
            xd = R.dequantize(xq, R.const(0.5, "float32"), R.const(3, "int8"), axis=-1, out_dtype="float32")
            y = R.matmul(xd, w)
            z = R.add(y, R.const(BIAS))
            R.output(z)
        return z


@I.ir_module
class Expected:
    @R.function
    def main(x: R.Tensor((1, 4), "float32")) -> R.Tensor((1, 2), "float32"):
        with R.dataflow():
            xq = R.quantize(x, R.const(0.5, "float32"), R.const(3, "int8"), axis=-1, out_dtype="int8")
            acc = R.matmul(xq, R.const(W_Q), out_dtype="int32")
            acc_k = R.add(acc, R.const(K))
            acc_f = R.astype(acc_k, "float32")
            z = R.multiply(acc_f, R.const(SCALE))
            R.output(z)
        return z


def test_fold_matmul_with_bias_into_int32():
    tvm.ir.assert_structural_equal(FoldQDQToInt8()(Before), Expected)


def test_fold_matmul_numerics_match_fake_quant():
    x = np.random.default_rng(0).uniform(-3, 3, (1, 4)).astype(np.float32)
    # Exact except the bias, rounded to the int32 grid: at most half an output step per channel.
    np.testing.assert_allclose(run(FoldQDQToInt8()(Before), x), run(Before, x), rtol=0, atol=SCALE.max() / 2 + 1e-5)


@pytest.mark.parametrize("dtype,zero_point", [("int8", -20), ("uint8", 100), ("int8", 0)])
def test_fold_conv_with_padding_and_zero_point(dtype, zero_point):
    rng = np.random.default_rng(1)
    weight = rng.normal(size=(8, 3, 3, 3)).astype(np.float32)
    bias = rng.normal(size=(1, 8, 1, 1)).astype(np.float32)

    @I.ir_module
    class Conv:
        @R.function
        def main(x: R.Tensor((1, 3, 6, 6), "float32")) -> R.Tensor((1, 8, 3, 3), "float32"):
            with R.dataflow():
                y = R.nn.conv2d(x, R.const(weight), strides=2, padding=1)
                z = R.add(y, R.const(bias))
                R.output(z)
            return z

    fake = InsertQDQ({"x": QParams(0.02, zero_point, dtype)})(QuantizeWeights()(Conv))
    folded = FoldQDQToInt8()(fake)
    ops = [b.value.op.name for b in folded["main"].body.blocks[0].bindings]
    assert "relax.dequantize" not in ops and ("relax.nn.pad" in ops) == (zero_point != 0)
    x = rng.uniform(-1, 1, (1, 3, 6, 6)).astype(np.float32)
    # Integer accumulation is exact; the float epilogue and the bias rounding differ by < half a step.
    step = 0.02 * np.abs(weight).max() / 127
    np.testing.assert_allclose(run(folded, x), run(fake, x), rtol=0, atol=step / 2 + 1e-4)


def test_fold_skips_nonzero_weight_zero_point():
    @I.ir_module
    class AsymmetricWeight:
        @R.function
        def main(x: R.Tensor((1, 4), "float32")) -> R.Tensor((1, 2), "float32"):
            with R.dataflow():
                w = R.dequantize(R.const(W_Q), R.const(S_W), R.const(np.ones(2, np.int8)), axis=1, out_dtype="float32")
                xq = R.quantize(x, R.const(0.5, "float32"), R.const(3, "int8"), axis=-1, out_dtype="int8")
                xd = R.dequantize(xq, R.const(0.5, "float32"), R.const(3, "int8"), axis=-1, out_dtype="float32")
                y = R.matmul(xd, w)
                R.output(y)
            return y

    tvm.ir.assert_structural_equal(FoldQDQToInt8()(AsymmetricWeight), AsymmetricWeight)


def test_fold_keeps_float_add_of_non_channel_bias():
    # A bias that varies along the batch axis is not a per-channel constant: the add stays in float.
    @I.ir_module
    class RowBias:
        @R.function
        def main(x: R.Tensor((2, 4), "float32")) -> R.Tensor((2, 2), "float32"):
            with R.dataflow():
                w = R.dequantize(R.const(W_Q), R.const(S_W), R.const(np.zeros(2, np.int8)), axis=1, out_dtype="float32")
                xq = R.quantize(x, R.const(0.5, "float32"), R.const(3, "int8"), axis=-1, out_dtype="int8")
                xd = R.dequantize(xq, R.const(0.5, "float32"), R.const(3, "int8"), axis=-1, out_dtype="float32")
                y = R.matmul(xd, w)
                z = R.add(y, R.const(np.array([[1.0], [2.0]], np.float32)))
                R.output(z)
            return z

    folded = FoldQDQToInt8()(RowBias)
    ops = [b.value.op.name for b in folded["main"].body.blocks[0].bindings]
    assert ops[-1] == "relax.add" and "relax.dequantize" not in ops
    x = np.random.default_rng(2).uniform(-3, 3, (2, 4)).astype(np.float32)
    np.testing.assert_allclose(run(folded, x), run(RowBias, x), rtol=1e-6, atol=1e-5)


def test_fold_activation_times_activation_matmul():
    # Attention in a pre-quantized QDQ model: both operands are dequantized activations (per tensor).
    @I.ir_module
    class Act:
        @R.function
        def main(a: R.Tensor((2, 3), "uint8"), b: R.Tensor((3, 4), "uint8")) -> R.Tensor((2, 4), "float32"):
            with R.dataflow():
                ad = R.dequantize(a, R.const(0.5, "float32"), R.const(10, "uint8"), axis=-1, out_dtype="float32")
                bd = R.dequantize(b, R.const(0.25, "float32"), R.const(3, "uint8"), axis=-1, out_dtype="float32")
                y = R.matmul(ad, bd)
                R.output(y)
            return y

    @I.ir_module
    class ActExpected:
        @R.function
        def main(a: R.Tensor((2, 3), "uint8"), b: R.Tensor((3, 4), "uint8")) -> R.Tensor((2, 4), "float32"):
            with R.dataflow():
                acc = R.matmul(a, b, out_dtype="int32")
                colsum = R.sum(R.astype(b, "int32"), axis=[-2], keepdims=True)
                acc1 = R.subtract(acc, R.multiply(colsum, R.const(10, "int32")))
                rowsum = R.sum(R.astype(a, "int32"), axis=[-1], keepdims=True)
                acc2 = R.subtract(acc1, R.multiply(rowsum, R.const(3, "int32")))
                acc3 = R.add(acc2, R.const(3 * 10 * 3, "int32"))
                y = R.multiply(R.astype(acc3, "float32"), R.const(0.125, "float32"))
                R.output(y)
            return y

    folded = FoldQDQToInt8()(Act)
    tvm.ir.assert_structural_equal(tvm.relax.transform.Normalize()(folded), tvm.relax.transform.Normalize()(ActExpected))
    rng = np.random.default_rng(2)
    a, b = rng.integers(0, 256, (2, 3)).astype(np.uint8), rng.integers(0, 256, (3, 4)).astype(np.uint8)
    want = ((a.astype(np.int64) - 10) @ (b.astype(np.int64) - 3)) * 0.125
    np.testing.assert_array_equal(run(folded, a, b), want.astype(np.float32))  # exact: integers times 2^-3


def test_fold_per_tensor_weight_scale_ignores_dequantize_axis():
    # A per-tensor weight dequantize keeps the ONNX default axis 1, which for OIHW is not the output channel.
    rng = np.random.default_rng(3)
    w_q = rng.integers(-60, 60, (4, 2, 3, 3)).astype(np.int8)

    @I.ir_module
    class PerTensor:
        @R.function
        def main(x: R.Tensor((1, 2, 5, 5), "uint8")) -> R.Tensor((1, 4, 3, 3), "float32"):
            with R.dataflow():
                xd = R.dequantize(x, R.const(0.1, "float32"), R.const(0, "uint8"), axis=1, out_dtype="float32")
                w = R.dequantize(R.const(w_q), R.const(0.02, "float32"), R.const(0, "int8"), axis=1,
                                 out_dtype="float32")
                y = R.nn.conv2d(xd, w)
                R.output(y)
            return y

    folded = FoldQDQToInt8()(PerTensor)
    ops = [b.value.op.name for b in folded["main"].body.blocks[0].bindings]
    assert "relax.dequantize" not in ops
    x = rng.integers(0, 256, (1, 2, 5, 5)).astype(np.uint8)
    np.testing.assert_allclose(run(folded, x), run(PerTensor, x), rtol=1e-5, atol=1e-5)


def _matmul_with_bias(weight_scale: np.ndarray) -> tvm.IRModule:
    @I.ir_module
    class Module:
        @R.function
        def main(x: R.Tensor((1, 4), "float32")) -> R.Tensor((1, 2), "float32"):
            with R.dataflow():
                w = R.dequantize(R.const(W_Q), R.const(weight_scale), R.const(np.zeros(2, np.int8)), axis=1,
                                 out_dtype="float32")
                xq = R.quantize(x, R.const(0.5, "float32"), R.const(3, "int8"), axis=-1, out_dtype="int8")
                xd = R.dequantize(xq, R.const(0.5, "float32"), R.const(3, "int8"), axis=-1, out_dtype="float32")
                y = R.matmul(xd, w)
                z = R.add(y, R.const(BIAS))
                R.output(z)
            return z

    return Module


FOLDED_MATMUL_FLOAT_BIAS = ["relax.quantize", "relax.matmul", "relax.add", "relax.astype", "relax.multiply",
                            "relax.add"]
UNCHANGED = ["relax.dequantize", "relax.quantize", "relax.dequantize", "relax.matmul", "relax.add"]


@pytest.mark.parametrize("weight_scale,ops", [([0.25, 1e-30], FOLDED_MATMUL_FLOAT_BIAS), ([0.25, 0.0], UNCHANGED)],
                         ids=["dead-channel", "zero-scale"])
def test_fold_leaves_a_bias_that_no_integer_holds_in_float_without_casting_it(weight_scale, ops):
    # Issue 17: `RuntimeWarning: invalid value encountered in cast` during an int8 compile. A channel whose
    # BatchNorm gamma is ~0 (folded into the weights) has a weight scale ~1e-30: its bias is ~1e30 accumulator
    # units, beyond int64, and was cast before the int32 range check. The matmul still folds, without the bias
    # (which stays a float add). A zero weight scale (a pre-quantized model's) has no accumulator units: the
    # layer stays fake-quantized. Nothing is cast out of range either way.
    module = _matmul_with_bias(np.array(weight_scale, np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        folded = FoldQDQToInt8()(module)
    assert [b.value.op.name for b in folded["main"].body.blocks[0].bindings] == ops
    x = np.random.default_rng(4).uniform(-3, 3, (1, 4)).astype(np.float32)
    want = ((np.clip(np.round(x / 0.5) + 3, -128, 127) - 3) * 0.5) @ (W_Q * np.array(weight_scale)) + BIAS
    np.testing.assert_allclose(run(folded, x), want, rtol=1e-5, atol=1e-5)
