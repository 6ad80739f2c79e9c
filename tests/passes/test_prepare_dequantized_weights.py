import numpy as np
import tvm
from quant_helpers import run
from tvm.script import ir as I
from tvm.script import relax as R

from tvmcompress.passes.prepare_dequantized_weights import PrepareDequantizedWeights

# A Gemm(transB=1) of a QDQ model as TVM imports it: per-row (output channel) scales on axis 0 of W[N, K], the
# transpose after the dequantize, and the int32 bias dequantized with s_x * s_w and reshaped.
W_Q = np.array([[1, -2, 3], [4, 0, -1]], np.int8)  # [N=2, K=3]
S_W = np.array([0.25, 0.5], np.float32)
B_Q = np.array([10, -4], np.int32)
S_B = np.array([0.025, 0.05], np.float32)


@I.ir_module
class Before:
    @R.function
    def main(x: R.Tensor((1, 3), "float32")) -> R.Tensor((1, 2), "float32"):
        with R.dataflow():
            w = R.dequantize(R.const(W_Q), R.const(S_W), R.const(np.zeros(2, np.int8)), axis=0, out_dtype="float32")
            wt = R.permute_dims(w, axes=[1, 0])
            y = R.matmul(x, wt)
            b = R.dequantize(R.const(B_Q), R.const(S_B), R.const(0, "int32"), axis=0, out_dtype="float32")
            b2 = R.reshape(b, R.shape([1, 2]))
            z = R.add(y, b2)
            R.output(z)
        return z


@I.ir_module
class Expected:
    @R.function
    def main(x: R.Tensor((1, 3), "float32")) -> R.Tensor((1, 2), "float32"):
        with R.dataflow():
            wt = R.dequantize(R.const(np.ascontiguousarray(W_Q.T)), R.const(S_W), R.const(np.zeros(2, np.int8)),
                              axis=1, out_dtype="float32")
            y = R.matmul(x, wt)
            z = R.add(y, R.const((B_Q * S_B).reshape(1, 2).astype(np.float32)))
            R.output(z)
        return z


def test_transpose_moves_below_the_dequantize_and_the_bias_folds():
    tvm.ir.assert_structural_equal(PrepareDequantizedWeights()(Before), Expected)


def test_prepared_module_computes_the_same():
    x = np.random.default_rng(0).normal(size=(1, 3)).astype(np.float32)
    # Transposes and the bias dequantize are exact in float32.
    np.testing.assert_array_equal(run(PrepareDequantizedWeights()(Before), x), run(Before, x))


def test_uint8_weight_with_zero_point_becomes_int8_with_zero_point_0():
    w_u8 = np.array([[120, 130], [128, 255]], np.uint8)

    @I.ir_module
    class Uint8:
        @R.function
        def main(x: R.Tensor((1, 2), "float32")) -> R.Tensor((1, 2), "float32"):
            with R.dataflow():
                w = R.dequantize(R.const(w_u8), R.const(0.5, "float32"), R.const(128, "uint8"), axis=1,
                                 out_dtype="float32")
                y = R.matmul(x, w)
                R.output(y)
            return y

    @I.ir_module
    class Shifted:
        @R.function
        def main(x: R.Tensor((1, 2), "float32")) -> R.Tensor((1, 2), "float32"):
            with R.dataflow():
                w = R.dequantize(R.const((w_u8.astype(np.int16) - 128).astype(np.int8)), R.const(0.5, "float32"),
                                 R.const(0, "int8"), axis=1, out_dtype="float32")
                y = R.matmul(x, w)
                R.output(y)
            return y

    tvm.ir.assert_structural_equal(PrepareDequantizedWeights()(Uint8), Shifted)


def test_activation_dequantize_and_unshiftable_weight_are_left_alone():
    # A dequantize of a non-constant stays; so does a uint8 weight whose shift leaves the int8 range (z = 0).
    w_u8 = np.array([[0, 255], [200, 3]], np.uint8)

    @I.ir_module
    class Mixed:
        @R.function
        def main(xq: R.Tensor((1, 2), "uint8")) -> R.Tensor((1, 2), "float32"):
            with R.dataflow():
                x = R.dequantize(xq, R.const(0.1, "float32"), R.const(7, "uint8"), axis=1, out_dtype="float32")
                w = R.dequantize(R.const(w_u8), R.const(0.5, "float32"), R.const(0, "uint8"), axis=1,
                                 out_dtype="float32")
                y = R.matmul(x, w)
                R.output(y)
            return y

    tvm.ir.assert_structural_equal(PrepareDequantizedWeights()(Mixed), Mixed)
