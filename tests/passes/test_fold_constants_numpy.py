"""FoldConstantsNumpy: before/after IR, agreement with Relax's FoldConstant (which compiles each op with LLVM),
and what it must leave alone."""

import numpy as np
import pytest
import tvm
from quant_helpers import run
from tvm import relax
from tvm.ir.expr import Constant
from tvm.script import ir as I
from tvm.script import relax as R

from tvmcompress.passes.fold_constants_numpy import FoldConstantsNumpy, fold_constants

RNG = np.random.default_rng(0)
MEAN = RNG.standard_normal((1, 3, 1, 1)).astype(np.float32)
VAR = RNG.uniform(0.5, 2.0, (1, 3, 1, 1)).astype(np.float32)
GAMMA = RNG.standard_normal((1, 3, 1, 1)).astype(np.float32)
W = RNG.standard_normal((3, 3, 1, 1)).astype(np.float32)
BIAS = RNG.standard_normal((3, 1)).astype(np.float32)


@I.ir_module
class Before:
    @R.function
    def main(x: R.Tensor((1, 3, 4, 4), "float32")) -> R.Tensor((1, 4, 4, 3), "float32"):
        with R.dataflow():
            # A decomposed BatchNorm's constant half, then layout ops on a constant.
            v = R.add(R.const(VAR), R.const(1e-5, "float32"))
            s = R.sqrt(v)
            g = R.divide(R.const(GAMMA), s)
            w = R.permute_dims(R.const(BIAS), axes=[1, 0])
            y = R.nn.conv2d(x, R.const(W))
            z = R.multiply(R.subtract(y, R.const(MEAN)), g)
            t = R.permute_dims(z, axes=[0, 2, 3, 1])
            u = R.add(t, R.reshape(w, (1, 1, 1, 3)))
            R.output(u)
        return u


def _expected():
    g = (GAMMA / np.sqrt(VAR + np.float32(1e-5))).astype(np.float32)
    w_row = BIAS.T.reshape(1, 1, 1, 3)

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((1, 3, 4, 4), "float32")) -> R.Tensor((1, 4, 4, 3), "float32"):
            with R.dataflow():
                y = R.nn.conv2d(x, R.const(W))
                z = R.multiply(R.subtract(y, R.const(MEAN)), R.const(g))
                t = R.permute_dims(z, axes=[0, 2, 3, 1])
                u = R.add(t, R.const(w_row))
                R.output(u)
            return u

    return Expected


def test_folds_batchnorm_constants_and_layout_ops():
    tvm.ir.assert_structural_equal(FoldConstantsNumpy()(Before), _expected())


def test_same_values_as_relax_fold_constant():
    """numpy and the LLVM-compiled fold agree (sqrt, divide, add are correctly rounded in both)."""
    x = RNG.standard_normal((1, 3, 4, 4)).astype(np.float32)
    ours = run(FoldConstantsNumpy()(Before), x)
    theirs = run(relax.transform.FoldConstant()(Before), x)
    np.testing.assert_array_equal(ours, theirs)


def test_leaves_expanding_broadcasts_integer_arithmetic_and_other_ops():
    @I.ir_module
    class Module:
        @R.function
        def main(x: R.Tensor((4, 4), "float32")) -> R.Tensor((4, 4), "float32"):
            with R.dataflow():
                # [4, 1] + [1, 4] -> [4, 4]: 16 elements from 8, not folded (would grow the artifact).
                a = R.add(R.const(np.ones((4, 1), np.float32)), R.const(np.ones((1, 4), np.float32)))
                # int32 divide rounds differently from numpy: left to TVM.
                b = R.divide(R.const(np.full((4,), 7, np.int32)), R.const(np.full((4,), 2, np.int32)))
                c = R.exp(R.const(np.ones((4, 4), np.float32)))  # not in the table
                d = R.add(R.add(x, a), R.add(c, R.astype(b, "float32")))
                R.output(d)
            return d

    tvm.ir.assert_structural_equal(FoldConstantsNumpy()(Module), Module)


def test_clip_bounds_guard_is_folded():
    """The ONNX importer's Clip guards its bounds with where(isnan(c), -inf, c): bool in the middle."""

    @I.ir_module
    class Module:
        @R.function
        def main(x: R.Tensor((4,), "float32")) -> R.Tensor((4,), "float32"):
            with R.dataflow():
                nan = R.isnan(R.const(np.array([6.0], np.float32)))
                hi = R.where(nan, R.const(float("inf"), "float32"), R.const(np.array([6.0], np.float32)))
                y = R.minimum(x, hi)
                R.output(y)
            return y

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((4,), "float32")) -> R.Tensor((4,), "float32"):
            with R.dataflow():
                y = R.minimum(x, R.const(np.array([6.0], np.float32)))
                R.output(y)
            return y

    tvm.ir.assert_structural_equal(FoldConstantsNumpy()(Module), Expected)


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_fold_constants_pipeline_matches_numpy(dtype):
    """fold_constants() = numpy first, FoldConstant for the rest (exp here): values match numpy's."""
    c = RNG.uniform(0.5, 2.0, (2, 3)).astype(dtype)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((2, 3), dtype))
    with bb.function("main", [x]):
        with bb.dataflow():
            s = bb.emit(relax.op.exp(relax.op.sqrt(relax.const(c))))
            y = bb.emit_output(relax.op.multiply(x, s))
        bb.emit_func_output(y)

    folded = fold_constants()(bb.get())
    (binding,) = [b for b in folded["main"].body.blocks[0].bindings if isinstance(b.value, relax.Call)]
    assert isinstance(binding.value.args[1], Constant)
    expected = np.exp(np.sqrt(c.astype(np.float64)))
    np.testing.assert_allclose(run(folded, np.ones((2, 3), dtype)), expected, rtol=2e-3)


def test_zero_dim_constants_keep_their_shape():
    @I.ir_module
    class Module:
        @R.function
        def main(x: R.Tensor((4,), "float32")) -> R.Tensor((4,), "float32"):
            with R.dataflow():
                hi = R.where(R.isnan(R.const(6.0, "float32")), R.const(float("inf"), "float32"), R.const(6.0, "float32"))
                y = R.minimum(x, hi)
                R.output(y)
            return y

    folded = FoldConstantsNumpy()(Module)
    (binding,) = folded["main"].body.blocks[0].bindings[:1]
    bound = binding.value.args[1]
    assert isinstance(bound, Constant) and bound.value.shape == () and float(bound.value.numpy()) == 6.0
