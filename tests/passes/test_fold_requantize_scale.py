import numpy as np
import tvm
from quant_helpers import run
from tvm.script import ir as I
from tvm.script import relax as R

from tvmcompress.passes.fold_requantize_scale import FoldRequantizeScale

M = np.array([0.5, 0.25, 0.003, 1.5], np.float32)  # per output channel: s_x * s_w[C]
S = np.float32(0.07)


@I.ir_module
class Before:
    @R.function
    def main(acc: R.Tensor((600, 4), "int32")) -> R.Tensor((600, 4), "uint8"):
        with R.dataflow():
            y = R.astype(acc, "float32")
            scaled = R.multiply(y, R.const(M))
            q = R.quantize(scaled, R.const(S), R.const(3, "uint8"), axis=-1, out_dtype="uint8")
            R.output(q)
        return q


@I.ir_module
class Expected:
    @R.function
    def main(acc: R.Tensor((600, 4), "int32")) -> R.Tensor((600, 4), "uint8"):
        with R.dataflow():
            y = R.astype(acc, "float32")
            scaled = R.multiply(y, R.const(M / S))
            q = R.quantize(scaled, R.const(np.float32(1.0)), R.const(3, "uint8"), axis=-1, out_dtype="uint8")
            R.output(q)
        return q


def test_requantize_scale_folds_into_the_multiplier():
    tvm.ir.assert_structural_equal(FoldRequantizeScale()(Before), Expected)


def test_folded_requantize_is_within_one_code_and_mostly_identical():
    acc = np.random.default_rng(0).integers(-3000, 3000, (600, 4)).astype(np.int32)
    want, got = run(Before, acc).astype(int), run(FoldRequantizeScale()(Before), acc).astype(int)
    assert np.abs(got - want).max() <= 1
    assert np.mean(got == want) > 0.99
    # The reference, computed as ONNX QuantizeLinear defines it.
    ref = np.clip(np.round((acc.astype(np.float32) * M) / S) + 3, 0, 255)
    np.testing.assert_array_equal(want, ref)


def test_per_channel_quantize_and_already_folded_ones_are_left_alone():
    @I.ir_module
    class PerChannel:
        @R.function
        def main(y: R.Tensor((600, 4), "float32")) -> R.Tensor((600, 4), "int8"):
            with R.dataflow():
                scaled = R.multiply(y, R.const(M))
                q = R.quantize(scaled, R.const(M), R.const(np.zeros(4, np.int8)), axis=-1, out_dtype="int8")
                R.output(q)
            return q

    tvm.ir.assert_structural_equal(FoldRequantizeScale()(PerChannel), PerChannel)
    tvm.ir.assert_structural_equal(FoldRequantizeScale()(Expected), Expected)
