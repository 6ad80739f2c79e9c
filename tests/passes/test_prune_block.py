import numpy as np
import pytest
import tvm
from quant_helpers import run
from sparse_helpers import dense_model, import_prepared, run_ort
from tvm.script import ir as I
from tvm.script import relax as R

from tvmcompress.errors import TvmcompressError
from tvmcompress.passes.prune_block import PruneBlock, PruneNM, block_mask, block_sparsity, nm_mask, select_matmuls

# [K=4, N=4]; 2x2 tiles with L2 norms: top-left 2, top-right 0.2, bottom-left 4, bottom-right 0.4.
W = np.array(
    [[1, 1, 0.1, 0.1],
     [1, 1, 0.1, 0.1],
     [2, 2, -0.2, 0.2],
     [2, 2, 0.2, 0.2]], np.float32)
W_BLOCK_HALF = np.array(
    [[1, 1, 0, 0],
     [1, 1, 0, 0],
     [2, 2, 0, 0],
     [2, 2, 0, 0]], np.float32)


@I.ir_module
class Before:
    @R.function
    def main(x: R.Tensor((1, 4), "float32")) -> R.Tensor((1, 4), "float32"):
        with R.dataflow():
            y = R.matmul(x, R.const(W))
            R.output(y)
        return y


@I.ir_module
class Expected:
    @R.function
    def main(x: R.Tensor((1, 4), "float32")) -> R.Tensor((1, 4), "float32"):
        with R.dataflow():
            y = R.matmul(x, R.const(W_BLOCK_HALF))
            R.output(y)
        return y


def test_prune_block_zeroes_smallest_tiles():
    tvm.ir.assert_structural_equal(PruneBlock(0.5, (2, 2))(Before), Expected)


def test_prune_nm_keeps_two_of_four_along_k():
    # Column 2 is [0.1, 0.1, -0.2, 0.2]: |-0.2| and 0.2 stay. Column 0: the two 2s.
    expected = np.array([[0, 0, 0, 0], [0, 0, 0, 0], [2, 2, -0.2, 0.2], [2, 2, 0.2, 0.2]], np.float32)

    @I.ir_module
    class ExpectedNM:
        @R.function
        def main(x: R.Tensor((1, 4), "float32")) -> R.Tensor((1, 4), "float32"):
            with R.dataflow():
                y = R.matmul(x, R.const(expected))
                R.output(y)
            return y

    tvm.ir.assert_structural_equal(PruneNM(2, 4)(Before), ExpectedNM)


def test_prune_skips_activation_weights_and_excluded_layers():
    @I.ir_module
    class TwoInputs:
        @R.function
        def main(x: R.Tensor((1, 4), "float32"), w: R.Tensor((4, 4), "float32")) -> R.Tensor((1, 4), "float32"):
            with R.dataflow():
                y = R.matmul(x, w)
                R.output(y)
            return y

    tvm.ir.assert_structural_equal(PruneBlock(0.5, (2, 2))(TwoInputs), TwoInputs)
    tvm.ir.assert_structural_equal(PruneBlock(0.5, (2, 2), layers=())(Before), Before)
    tvm.ir.assert_structural_equal(PruneBlock(0.5, (2, 2), layers=("y",))(Before), Expected)


def test_prune_unknown_layer_names_the_prunable_ones():
    with pytest.raises(TvmcompressError, match="no Dense/MatMul layer with a constant weight named fc9; prunable layers: matmul_0"):
        select_matmuls(Before, ("fc9",))


def test_bad_specs_raise_user_errors():
    with pytest.raises(TvmcompressError, match=r"block sparsity must be in \[0, 1\)"):
        PruneBlock(1.0, (1, 16))
    with pytest.raises(TvmcompressError, match="N:M pruning needs 0 < N < M, got 4:2"):
        PruneNM(4, 2)


def test_block_mask_partial_edge_tiles_and_exact_fraction():
    weight = np.random.default_rng(0).normal(size=(10, 37)).astype(np.float32)
    mask = block_mask(weight, 0.9, (1, 16))  # 3 tiles per row, the last one 5 wide: 30 tiles, 27 dropped
    tiles = np.add.reduceat(mask, [0, 16, 32], axis=1) > 0
    assert mask.shape == weight.shape and tiles.sum() == 3
    assert block_sparsity(np.where(mask, weight, 0), (1, 16)) == pytest.approx(0.9)


def test_nm_mask_ragged_tail_keeps_ceil_share():
    weight = np.random.default_rng(1).normal(size=(6, 3)).astype(np.float32)
    mask = nm_mask(weight, 2, 4)
    np.testing.assert_array_equal(mask[:4].sum(axis=0), [2, 2, 2])
    np.testing.assert_array_equal(mask[4:].sum(axis=0), [1, 1, 1])  # ceil(2 * 2 / 4)


@pytest.mark.parametrize("gemm", [False, True], ids=["matmul", "gemm_transB"])
def test_pruned_module_matches_ort_on_equally_pruned_onnx(gemm):
    rng = np.random.default_rng(2)
    kn = rng.normal(size=(64, 48)).astype(np.float32)  # the [K, N] view the pass prunes
    x = rng.normal(size=(3, 64)).astype(np.float32)
    onnx_weight = kn.T if gemm else kn
    for prune, mask in ((PruneBlock(0.75, (4, 8)), block_mask(kn, 0.75, (4, 8))), (PruneNM(2, 4), nm_mask(kn, 2, 4))):
        pruned_kn = np.where(mask, kn, 0).astype(np.float32)
        expected = run_ort(dense_model(pruned_kn.T if gemm else pruned_kn, 3, gemm), x)
        actual = run(prune(import_prepared(dense_model(onnx_weight, 3, gemm))), x)
        # float32 dot products of 64 terms summed in a different order: a few ulps of |y| ~ 10.
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)
