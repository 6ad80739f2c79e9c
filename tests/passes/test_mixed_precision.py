import ml_dtypes
import numpy as np
import pytest
import tvm
from quant_helpers import run
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R

from tvmcompress.passes.mixed_precision import MixedPrecision

W = np.random.default_rng(0).normal(size=(4, 2)).astype(np.float32)
LOW = {"float16": np.float16, "bfloat16": ml_dtypes.bfloat16}


@I.ir_module
class Before:
    @R.function
    def main(x: R.Tensor((1, 4), "float32")) -> R.Tensor((1, 2), "float32"):
        with R.dataflow():
            y = R.matmul(x, R.const(W))
            z = R.nn.relu(y)
            R.output(z)
        return z


def expected(dtype: str) -> tvm.IRModule:
    w_low = relax.const(tvm.runtime.tensor(W.astype(LOW[dtype])))

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((1, 4), "float32")) -> R.Tensor((1, 2), "float32"):
            with R.dataflow():
                x_low = R.astype(x, dtype)
                acc = R.matmul(x_low, w_low, out_dtype="float32")  # fp32 accumulation
                y = R.astype(acc, dtype)
                relu = R.nn.relu(y)
                z = R.astype(relu, "float32")
                R.output(z)
            return z

    return Expected


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_mixed_precision_casts_matmul_inputs_and_stores_low_precision_weight(dtype):
    tvm.ir.assert_structural_equal(MixedPrecision(dtype)(Before), expected(dtype))


@pytest.mark.parametrize("dtype,rtol", [("float16", 2e-3), ("bfloat16", 1.6e-2)])
def test_mixed_precision_numerics(dtype, rtol):
    # Tolerance: a few units of the low precision's epsilon (fp16 2^-10, bf16 2^-7) relative to |x||W|.
    x = np.random.default_rng(1).normal(size=(1, 4)).astype(np.float32)
    ref = np.maximum(x @ W, 0)
    atol = rtol * np.abs(x) @ np.abs(W)
    assert np.all(np.abs(run(MixedPrecision(dtype)(Before), x) - ref) <= atol + 1e-6)


def test_mixed_precision_leaves_integer_module_alone():
    @I.ir_module
    class Integer:
        @R.function
        def main(x: R.Tensor((1, 4), "int32")) -> R.Tensor((1, 4), "int32"):
            with R.dataflow():
                y = R.add(x, x)
                R.output(y)
            return y

    tvm.ir.assert_structural_equal(MixedPrecision("bfloat16")(Integer), Integer)


def test_mixed_precision_rejects_other_dtypes():
    with pytest.raises(ValueError):
        MixedPrecision("float8")
