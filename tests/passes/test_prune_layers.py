"""PruneLayers: residual blocks found, removed (golden IR), and the result computed as x instead of x + f(x)."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from prune_onnx import run_relax
from tvm.script import ir as I
from tvm.script import relax as R

from tvmcompress.passes.prune_layers import PruneLayers, choose_blocks, find_residual_blocks

RNG = np.random.default_rng(0)
W1 = RNG.standard_normal((2, 2, 1, 1)).astype(np.float32)
W2 = (0.01 * RNG.standard_normal((2, 2, 1, 1))).astype(np.float32)  # a branch that barely contributes


@I.ir_module
class Before:
    @R.function
    def main(x: R.Tensor((1, 2, 2, 2), "float32")) -> R.Tensor((1, 2, 2, 2), "float32"):
        with R.dataflow():
            s = R.nn.relu(x)
            a = R.nn.conv2d(s, R.const(W1))
            b = R.add(a, s)
            c = R.nn.relu(b)
            d = R.nn.conv2d(c, R.const(W2))
            e = R.add(c, d)
            y = R.nn.relu(e)
            R.output(y)
        return y


@I.ir_module
class Expected:
    @R.function
    def main(x: R.Tensor((1, 2, 2, 2), "float32")) -> R.Tensor((1, 2, 2, 2), "float32"):
        with R.dataflow():
            s = R.nn.relu(x)
            a = R.nn.conv2d(s, R.const(W1))
            b = R.add(a, s)
            c = R.nn.relu(b)
            y = R.nn.relu(c)
            R.output(y)
        return y


def test_find_residual_blocks_names_branch_and_skip():
    assert find_residual_blocks(Before) == {"b": ("a", "s"), "e": ("d", "c")}


def test_prune_layers_replaces_block_by_its_skip():
    tvm.ir.assert_structural_equal(PruneLayers(["e"])(Before), Expected)
    tvm.ir.assert_structural_equal(PruneLayers([])(Before), Before)
    with pytest.raises(ValueError, match=r"\['a'\] are not residual adds of main"):
        PruneLayers(["a"])(Before)


def test_choose_blocks_removes_the_weakest_branch_and_numbers_follow():
    data = [{"x": RNG.standard_normal((1, 2, 2, 2)).astype(np.float32)} for _ in range(4)]
    assert choose_blocks(Before, 1, data) == ["e"]
    x = data[0]["x"]
    c = np.maximum(np.einsum("oi,nihw->nohw", W1[:, :, 0, 0], np.maximum(x, 0)) + np.maximum(x, 0), 0)
    # relu(relu(c)) == c: the pruned model is exactly the first block. float32 rounding: 1e-5.
    np.testing.assert_allclose(run_relax(PruneLayers(["e"])(Before), {"x": x}), c, rtol=1e-5, atol=1e-5)
