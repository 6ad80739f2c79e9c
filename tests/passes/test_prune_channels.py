"""PruneChannels / choose_channels / channel_groups: golden IR, dependency groups, and numbers against ONNX Runtime
running the same model with the same channels sliced out of its initializers (tests/passes/prune_onnx.py)."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from prune_onnx import build_test_cnn, prune_onnx_channels, run_onnx, run_relax
from tvm.script import ir as I
from tvm.script import relax as R

from tvmcompress.frontend import canonicalize, import_to_relax
from tvmcompress.passes.channel_groups import analyze_channels
from tvmcompress.passes.prune_channels import PruneChannels, choose_channels, kept_count
from tvmcompress.passes.prune import layer_macs, prepare_for_pruning

RNG = np.random.default_rng(0)
W1 = RNG.standard_normal((4, 2, 1, 1)).astype(np.float32)
B1 = RNG.standard_normal((1, 4, 1, 1)).astype(np.float32)
W2 = RNG.standard_normal((3, 4, 3, 3)).astype(np.float32)
W3 = RNG.standard_normal((4, 2, 1, 1)).astype(np.float32)
WM = RNG.standard_normal((16, 5)).astype(np.float32)
KEEP = np.array([0, 2])


@I.ir_module
class Before:
    @R.function
    def main(x: R.Tensor((1, 2, 2, 2), "float32")) -> R.Tensor((1, 3, 2, 2), "float32"):
        with R.dataflow():
            a = R.nn.conv2d(x, R.const(W1))
            b = R.add(a, R.const(B1))
            c = R.nn.relu(b)
            y = R.nn.conv2d(c, R.const(W2), padding=[1, 1, 1, 1])
            R.output(y)
        return y


@I.ir_module
class Expected:
    @R.function
    def main(x: R.Tensor((1, 2, 2, 2), "float32")) -> R.Tensor((1, 3, 2, 2), "float32"):
        with R.dataflow():
            a = R.nn.conv2d(x, R.const(W1[KEEP]))
            b = R.add(a, R.const(B1[:, KEEP]))
            c = R.nn.relu(b)
            y = R.nn.conv2d(c, R.const(W2[:, KEEP]), padding=[1, 1, 1, 1])
            R.output(y)
        return y


def test_prune_channels_slices_producer_bias_and_consumer():
    tvm.ir.assert_structural_equal(PruneChannels({"a": KEEP})(Before), Expected)


def test_prune_channels_numerics_match_sliced_numpy():
    x = RNG.standard_normal((1, 2, 2, 2)).astype(np.float32)
    # The removed channels' contribution is exactly what the sliced weights leave out: 1e-5 is float32 rounding.
    np.testing.assert_allclose(
        run_relax(PruneChannels({"a": KEEP})(Before), {"x": x}), run_relax(Expected, {"x": x}), rtol=1e-5, atol=1e-5
    )


def test_output_channels_are_never_pruned():
    # `y` is the function's output: its channels are frozen, and only `a`'s group is prunable.
    assert list(choose_channels(Before, 0.5, multiple_of=1)) == ["a"]
    with pytest.raises(ValueError, match="the channels of y cannot be pruned"):
        PruneChannels({"y": np.array([0])})(Before)


def test_empty_decision_is_identity():
    tvm.ir.assert_structural_equal(PruneChannels({})(Before), Before)
    tvm.ir.assert_structural_equal(PruneChannels(choose_channels(Before, 0.0))(Before), Before)


def test_residual_add_ties_two_producers_and_flatten_expands_rows():
    @I.ir_module
    class Residual:
        @R.function
        def main(x: R.Tensor((1, 2, 2, 2), "float32")) -> R.Tensor((1, 5), "float32"):
            with R.dataflow():
                a = R.nn.conv2d(x, R.const(W1))
                b = R.nn.conv2d(x, R.const(W3))
                c = R.add(a, b)
                d = R.reshape(c, R.shape([1, 16]))
                y = R.matmul(d, R.const(WM))
                R.output(y)
            return y

    rows = (KEEP[:, None] * 4 + np.arange(4)).reshape(-1)  # channel c owns features 4c .. 4c+3

    @I.ir_module
    class ResidualExpected:
        @R.function
        def main(x: R.Tensor((1, 2, 2, 2), "float32")) -> R.Tensor((1, 5), "float32"):
            with R.dataflow():
                a = R.nn.conv2d(x, R.const(W1[KEEP]))
                b = R.nn.conv2d(x, R.const(W3[KEEP]))
                c = R.add(a, b)
                d = R.reshape(c, R.shape([1, 8]))
                y = R.matmul(d, R.const(WM[rows]))
                R.output(y)
            return y

    analysis = analyze_channels(Residual)
    (root,) = analysis.prunable_groups()
    assert [l.binding for l in analysis.sources(root)] == ["a", "b"]
    tvm.ir.assert_structural_equal(PruneChannels({"b": KEEP})(Residual), ResidualExpected)
    with pytest.raises(ValueError, match="b is tied to another named layer with a different choice"):
        PruneChannels({"a": KEEP, "b": np.array([1, 3])})(Residual)


def test_kept_count_rounds_to_simd_multiples():
    assert kept_count(64, 0.5, 8) == 32
    assert kept_count(64, 0.3, 8) == 48  # 44.8 -> 48
    assert kept_count(24, 0.5, 8) == 16  # 12 -> the nearest multiple of 8 (round half to even: 1.5 -> 2)
    assert kept_count(10, 0.5, 8) == 5  # fewer than 2 vectors: plain rounding
    assert kept_count(16, 0.99, 8) == 8 and kept_count(3, 0.99, 8) == 1


@pytest.fixture(scope="module")
def test_cnn():
    # The oracle maps Relax layers to ONNX nodes by order: use the canonical model, which the importer follows.
    model = canonicalize(build_test_cnn(), {})
    return model, prepare_for_pruning(import_to_relax(model))


def test_pruned_cnn_matches_onnxruntime_on_equivalently_pruned_onnx(test_cnn):
    model, mod = test_cnn
    decision = choose_channels(mod, 0.5, multiple_of=4)
    analysis = analyze_channels(mod)
    # Every dependency kind of the model forms a group: the stem + identity residual, the strided block's
    # residual (two producers), the depthwise conv's (tied to its input), the concat part, the last conv.
    assert len(decision) == 6
    pruned = PruneChannels(decision)(mod)
    by_root = {analysis.find(analysis.layers[name].out_space): kept for name, kept in decision.items()}
    per_layer = [by_root.get(analysis.find(l.out_space)) if l.op != "depthwise_conv2d" else None
                 for l in analysis.layers.values()]
    onnx_pruned = prune_onnx_channels(model, per_layer)
    x = {"input": np.random.default_rng(1).standard_normal((2, 3, 16, 16)).astype(np.float32)}
    expected = run_onnx(onnx_pruned, x)
    # Pruning changes the output a lot (a sanity check that the comparison is not vacuous) ...
    assert np.abs(expected - run_onnx(model, x)).max() > 0.1
    # ... and the Relax pruned model computes what ORT computes on the sliced ONNX: 1e-4 covers float32
    # reassociation in the two runtimes' convolutions.
    np.testing.assert_allclose(run_relax(pruned, x), expected, rtol=1e-4, atol=1e-4)
    before = sum(l["macs"] for l in layer_macs(mod).values())
    after = sum(l["macs"] for l in layer_macs(pruned).values())
    assert before / after > 3.0  # both the input and output channels of inner layers halve
