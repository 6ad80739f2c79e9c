"""Reconstruction: im2col, the ridge solve, ReplaceLayerWeights' golden IR, and the fit on a pruned CNN."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from prune_onnx import build_test_cnn, run_relax
from tvm.script import ir as I
from tvm.script import relax as R

from tvmcompress.frontend import canonicalize, import_to_relax
from tvmcompress.passes.prune_config import PruneConfig
from tvmcompress.passes.reconstruct import ReplaceLayerWeights, _solve, im2col
from tvmcompress.passes.prune import prepare_for_pruning, prune

RNG = np.random.default_rng(0)
W = RNG.standard_normal((3, 2, 3, 3)).astype(np.float32)
B = RNG.standard_normal((1, 3, 1, 1)).astype(np.float32)


@I.ir_module
class Before:
    @R.function
    def main(x: R.Tensor((2, 2, 5, 5), "float32")) -> R.Tensor((2, 3, 3, 3), "float32"):
        with R.dataflow():
            a = R.nn.conv2d(x, R.const(W), strides=[2, 2], padding=[1, 1, 1, 1])
            y = R.add(a, R.const(B))
            R.output(y)
        return y


def test_replace_layer_weights_sets_weight_and_shifts_bias():
    new_w, offset = 2 * W, np.array([1.0, 2.0, 3.0])

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((2, 2, 5, 5), "float32")) -> R.Tensor((2, 3, 3, 3), "float32"):
            with R.dataflow():
                a = R.nn.conv2d(x, R.const(new_w), strides=[2, 2], padding=[1, 1, 1, 1])
                y = R.add(a, R.const((B + offset.reshape(1, 3, 1, 1)).astype(np.float32)))
                R.output(y)
            return y

    tvm.ir.assert_structural_equal(ReplaceLayerWeights({"a": new_w}, {"y": offset})(Before), Expected)
    tvm.ir.assert_structural_equal(ReplaceLayerWeights({})(Before), Before)


def test_im2col_times_weight_is_the_convolution():
    x = RNG.standard_normal((2, 2, 5, 5)).astype(np.float32)
    cols = im2col(x, (3, 3), [2, 2], [1, 1, 1, 1], [1, 1])
    conv = (cols @ W.reshape(3, -1).T).reshape(2, 3, 3, 3).transpose(0, 3, 1, 2) + B
    # float32 sums of 18 products in a different order: 1e-5.
    np.testing.assert_allclose(conv, run_relax(Before, {"x": x}), rtol=1e-5, atol=1e-5)


def test_solve_recovers_exact_weights_and_respects_the_mask():
    a = RNG.standard_normal((200, 6))
    w = RNG.standard_normal((6, 2))
    mask = RNG.random((6, 2)) > 0.5
    b = a @ np.where(mask, w, 0) + np.array([0.5, -1.0])
    fitted, bias = _solve(a, b, 0.0, True, mask)
    np.testing.assert_allclose(fitted, np.where(mask, w, 0), atol=1e-9)  # exact data, no ridge: exact solution
    np.testing.assert_allclose(bias, [0.5, -1.0], atol=1e-9)
    assert np.all(fitted[~mask] == 0)


C1 = (RNG.standard_normal((8, 2, 3, 3)) / 3).astype(np.float32)
C2 = (RNG.standard_normal((8, 8, 3, 3)) / 6).astype(np.float32)
M = (RNG.standard_normal((32, 3)) / 5).astype(np.float32)
BIAS = (0.3 * RNG.standard_normal((1, 8, 1, 1))).astype(np.float32)


@I.ir_module
class Small:
    @R.function
    def main(x: R.Tensor((8, 2, 4, 4), "float32")) -> R.Tensor((8, 3), "float32"):
        with R.dataflow():
            a = R.nn.conv2d(x, R.const(C1), padding=[1, 1, 1, 1])
            b = R.nn.relu(R.add(a, R.const(BIAS)))
            c = R.nn.conv2d(b, R.const(C2), strides=[2, 2], padding=[1, 1, 1, 1])
            d = R.nn.relu(R.add(c, R.const(BIAS)))
            e = R.reshape(d, R.shape([8, 32]))
            y = R.matmul(e, R.const(M))
            R.output(y)
        return y


def _check_reconstruction(mod, spec, shape):
    rng = np.random.default_rng(3)
    # 16 batches: enough equations that the fit generalizes (the final matmul has 17 unknowns per output).
    data = [{"input": rng.standard_normal(shape).astype(np.float32)} for _ in range(16)]
    held_out = {"input": rng.standard_normal(shape).astype(np.float32)}
    name = mod["main"].params[0].name
    data = [{name: d["input"]} for d in data]
    held_out = {name: held_out["input"]}
    plain, _ = prune(mod, PruneConfig.parse(spec, reconstruct=False), data)
    fitted, record = prune(mod, PruneConfig.parse(spec), data)
    assert record["reconstructed"] and record["reconstruction"]
    assert all(e["relative_error_after"] <= e["relative_error_before"] for e in record["reconstruction"].values())
    teacher = run_relax(prepare_for_pruning(mod), held_out)
    plain_err = np.linalg.norm(run_relax(plain, held_out) - teacher)
    fitted_err = np.linalg.norm(run_relax(fitted, held_out) - teacher)
    assert fitted_err < 0.9 * plain_err, (plain_err, fitted_err)  # on inputs the fit never saw


@pytest.mark.parametrize("spec", ["channel:0.5", "unstructured:0.8"])
def test_reconstruction_brings_pruned_model_closer_to_teacher(spec):
    _check_reconstruction(Small, spec, (8, 2, 4, 4))


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["channel:0.5", "unstructured:0.8"])
def test_reconstruction_on_cnn_with_residuals_concat_and_depthwise(spec):
    _check_reconstruction(import_to_relax(canonicalize(build_test_cnn(batch=8), {})), spec, (8, 3, 16, 16))
