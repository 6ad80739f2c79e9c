"""EqualizeConvInputs: golden IR, exactness in float, the scale formulas, and what is left alone."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R

from tvmcompress.passes.equalize_conv_inputs import (
    MIN_SCALE, EqualizeConvInputs, equalization_scales, measure_conv_input_ranges,
)

W_DW = np.arange(1, 28, dtype=np.float32).reshape(3, 1, 3, 3) / 10  # depthwise, 3 channels
W_PW = np.array([[1.0, 2.0, 0.5], [3.0, -4.0, 1.0], [0.5, 0.5, 2.0]], np.float32).reshape(3, 3, 1, 1)  # 1x1


def _module(weight: np.ndarray, groups: int) -> tvm.IRModule:
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 3, 4, 4), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            act = bb.emit(relax.op.nn.relu(x), name_hint="act")
            y = bb.emit_output(relax.op.nn.conv2d(
                act, relax.const(weight), padding=1 if weight.shape[2] == 3 else 0, groups=groups), name_hint="y")
        bb.emit_func_output(y)
    return bb.get()


def test_depthwise_input_scaled_per_channel_and_weights_absorb_it():
    s = np.array([1.0, 0.25, 0.5], np.float32)

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((1, 3, 4, 4), "float32")) -> R.Tensor((1, 3, 4, 4), "float32"):
            with R.dataflow():
                act = R.nn.relu(x)
                act_equalized = R.multiply(act, R.const(np.array([1.0, 4.0, 2.0], np.float32).reshape(1, 3, 1, 1)))
                y = R.nn.conv2d(act_equalized, R.const(W_DW * s.reshape(3, 1, 1, 1)), padding=1, groups=3)
                R.output(y)
            return y

    tvm.ir.assert_structural_equal(EqualizeConvInputs({"act": s})(_module(W_DW, 3)), Expected)


def test_dense_conv_weights_scaled_along_input_channels():
    s = np.array([0.5, 1.0, 0.25], np.float32)

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((1, 3, 4, 4), "float32")) -> R.Tensor((1, 3, 4, 4), "float32"):
            with R.dataflow():
                act = R.nn.relu(x)
                act_equalized = R.multiply(act, R.const(np.array([2.0, 1.0, 4.0], np.float32).reshape(1, 3, 1, 1)))
                y = R.nn.conv2d(act_equalized, R.const(W_PW * s.reshape(1, 3, 1, 1)))
                R.output(y)
            return y

    tvm.ir.assert_structural_equal(EqualizeConvInputs({"act": s})(_module(W_PW, 1)), Expected)


@pytest.mark.parametrize("weight,groups", [(W_DW, 3), (W_PW, 1)])
def test_equalized_module_computes_the_same(weight, groups):
    # Exact in real arithmetic; float32 rounds X / s and W * s once each: relative error ~1e-7.
    mod = _module(weight, groups)
    equalized = EqualizeConvInputs({"act": np.array([0.03, 1.0, 0.5], np.float32)})(mod)
    x = np.random.default_rng(0).normal(size=(1, 3, 4, 4)).astype(np.float32)
    results = [relax.VirtualMachine(tvm.compile(m, "llvm"), tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
               for m in (mod, equalized)]
    np.testing.assert_allclose(results[1], results[0], rtol=1e-5, atol=1e-5)


def test_no_scales_leaves_the_module_alone():
    mod = _module(W_DW, 3)
    tvm.ir.assert_structural_equal(EqualizeConvInputs({})(mod), mod)
    tvm.ir.assert_structural_equal(EqualizeConvInputs({"other": np.ones(3, np.float32)})(mod), mod)


def test_excluded_conv_is_not_equalized():
    mod = _module(W_DW, 3)
    tvm.ir.assert_structural_equal(EqualizeConvInputs({"act": np.array([1.0, 0.5, 1.0], np.float32)}, ["y"])(mod), mod)


def test_scales_depthwise_fully_dense_balanced_and_narrow_spread_skipped():
    dw, pw = _module(W_DW, 3), _module(W_PW, 1)
    spread = {"act": np.array([40.0, 2.0, 1.0])}
    # Depthwise: each channel to the largest one's range.
    np.testing.assert_allclose(equalization_scales(dw, spread)["act"], [1.0, 0.05, 0.025], rtol=1e-6)
    # Dense: sqrt(max|X_c| / max|W_c|), normalized to the largest; max|W| per input channel is 3, 4 and 2.
    expected = np.sqrt(np.array([40.0 / 3.0, 2.0 / 4.0, 1.0 / 2.0]))
    np.testing.assert_allclose(equalization_scales(pw, spread)["act"], expected / expected.max(), rtol=1e-6)
    # Spread below 8x: left alone (a ReLU CNN's inputs).
    assert equalization_scales(dw, {"act": np.array([4.0, 1.0, 1.0])}) == {}
    # A channel never seen non-zero keeps 1; no channel is amplified more than 1 / MIN_SCALE.
    np.testing.assert_allclose(equalization_scales(dw, {"act": np.array([1e6, 0.0, 1.0])})["act"],
                               [1.0, 1.0, MIN_SCALE])


def test_measured_ranges_are_per_channel_maxima():
    mod = _module(W_DW, 3)
    x = np.zeros((1, 3, 4, 4), np.float32)
    x[0, 0, 1, 2], x[0, 1, 3, 3], x[0, 2, 0, 0] = 5.0, -7.0, 0.25  # relu cuts channel 1's only non-zero value
    second = np.full((1, 3, 4, 4), 0.5, np.float32)
    ranges = measure_conv_input_ranges(mod, [{"x": x}, {"x": second}])
    np.testing.assert_array_equal(ranges["act"], [5.0, 0.5, 0.5])
