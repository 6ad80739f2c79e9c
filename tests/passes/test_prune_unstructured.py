"""PruneUnstructured / choose_masks: golden IR, exact sparsity, and numbers against ONNX Runtime running the model
with the same weights zeroed."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from prune_onnx import build_test_cnn, run_onnx, run_relax, zero_onnx_weights
from tvm.script import ir as I
from tvm.script import relax as R

from tvmcompress.frontend import canonicalize, import_to_relax
from tvmcompress.passes.channel_groups import analyze_channels
from tvmcompress.passes.prune_unstructured import PruneUnstructured, choose_masks
from tvmcompress.passes.prune import prepare_for_pruning

W = np.array([[0.5, -0.1, 2.0], [0.05, -3.0, 0.2]], np.float32)  # [K=2, N=3]
MASK = np.abs(W) > 0.3  # the 3 largest of 6: sparsity 0.5


@I.ir_module
class Before:
    @R.function
    def main(x: R.Tensor((1, 2), "float32")) -> R.Tensor((1, 3), "float32"):
        with R.dataflow():
            y = R.matmul(x, R.const(W))
            R.output(y)
        return y


@I.ir_module
class Expected:
    @R.function
    def main(x: R.Tensor((1, 2), "float32")) -> R.Tensor((1, 3), "float32"):
        with R.dataflow():
            y = R.matmul(x, R.const(np.where(MASK, W, 0).astype(np.float32)))
            R.output(y)
        return y


def test_magnitude_mask_zeroes_the_smallest_weights():
    masks = choose_masks(Before, 0.5)
    np.testing.assert_array_equal(masks["y"], MASK)
    tvm.ir.assert_structural_equal(PruneUnstructured(masks)(Before), Expected)


def test_zero_sparsity_is_identity():
    assert choose_masks(Before, 0.0) == {}
    tvm.ir.assert_structural_equal(PruneUnstructured({})(Before), Before)


def test_mask_of_wrong_shape_is_rejected():
    with pytest.raises(ValueError, match=r"mask of y has shape \(3, 2\), the weight \(2, 3\)"):
        PruneUnstructured({"y": MASK.T})(Before)


@pytest.fixture(scope="module")
def test_cnn():
    # The oracle maps Relax layers to ONNX nodes by order: use the canonical model, which the importer follows.
    model = canonicalize(build_test_cnn(), {})
    return model, prepare_for_pruning(import_to_relax(model))


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_sparsified_cnn_matches_onnxruntime_with_same_zeros(test_cnn, scope):
    model, mod = test_cnn
    masks = choose_masks(mod, 0.8, scope)
    layers = analyze_channels(mod).layers
    total = sum(m.size for m in masks.values())
    zeros = sum(int((~m).sum()) for m in masks.values())
    assert abs(zeros / total - 0.8) < 1e-3
    if scope == "layer":  # every layer exactly at the sparsity (to the nearest weight)
        assert all(abs((~m).mean() - 0.8) <= 1.0 / m.size for m in masks.values())
    pruned = PruneUnstructured(masks)(mod)
    x = {"input": np.random.default_rng(2).standard_normal((2, 3, 16, 16)).astype(np.float32)}
    expected = run_onnx(zero_onnx_weights(model, [masks.get(name) for name in layers]), x)
    assert np.abs(expected - run_onnx(model, x)).max() > 0.1
    # Same zeros, same arithmetic otherwise: 1e-4 covers float32 reassociation between the two runtimes.
    np.testing.assert_allclose(run_relax(pruned, x), expected, rtol=1e-4, atol=1e-4)


def test_prune_orchestration_runs_nm_from_the_block_pass_and_records_it():
    from tvmcompress.passes.prune_config import PruneConfig
    from tvmcompress.passes.prune import prune

    pruned, record = prune(Before, PruneConfig.parse("2:4"))
    assert record["steps"] == [{"step": "2:4", "layers": 1}]
    # K = 2 < M = 4: the one (partial) group per column keeps ceil(2 * 2 / 4) = 1 of its 2 weights.
    (layer,) = record["layers"]
    assert layer["sparsity"] == 0.5 and layer["kept"] == layer["total"] == 3
