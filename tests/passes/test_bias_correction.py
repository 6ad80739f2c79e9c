"""Bias correction: the measured mean weight error is E[x W] - E[x Wq], and adding it back removes the mean output
error that int8 weights cause (passes/bias_correction.py)."""

import numpy as np
import tvm
from quant_helpers import host_target
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R

from tvmcompress.passes.bias_correction import CorrectBias, measure_bias_corrections
from tvmcompress.passes.quantize import prepare_for_quantization
from tvmcompress.passes.quantize_weights import QuantizeWeights, quantize_per_channel

RNG = np.random.default_rng(0)
W = RNG.normal(0, 0.5, (8, 16)).astype(np.float32)
B = RNG.normal(0, 0.1, (16,)).astype(np.float32)
E = RNG.normal(0, 0.01, (16,)).astype(np.float32)


@I.ir_module
class WithBias:
    @R.function
    def main(x: R.Tensor((2, 8), "float32")) -> R.Tensor((2, 16), "float32"):
        with R.dataflow():
            h = R.matmul(x, R.const(W))
            y = R.add(h, R.const(B))
            R.output(y)
        return y


@I.ir_module
class NoBias:
    @R.function
    def main(x: R.Tensor((2, 8), "float32")) -> R.Tensor((2, 16), "float32"):
        with R.dataflow():
            h = R.matmul(x, R.const(W))
            y = R.nn.relu(h)
            R.output(y)
        return y


def test_correction_goes_into_the_existing_bias():
    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((2, 8), "float32")) -> R.Tensor((2, 16), "float32"):
            with R.dataflow():
                h = R.matmul(x, R.const(W))
                y = R.add(h, R.const((B + E.reshape(1, 16)).astype(np.float32)))
                R.output(y)
            return y

    tvm.ir.assert_structural_equal(CorrectBias({"h": E})(WithBias), Expected)


def test_layer_without_bias_gets_an_add():
    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((2, 8), "float32")) -> R.Tensor((2, 16), "float32"):
            with R.dataflow():
                h = R.matmul(x, R.const(W))
                h_corrected = R.add(h, R.const(E.reshape(1, 16)))
                y = R.nn.relu(h_corrected)
                R.output(y)
            return y

    tvm.ir.assert_structural_equal(CorrectBias({"h": E})(NoBias), Expected)


def test_no_corrections_leave_the_module_alone():
    tvm.ir.assert_structural_equal(CorrectBias({})(WithBias), WithBias)
    tvm.ir.assert_structural_equal(CorrectBias({"other": E})(NoBias), NoBias)


def test_corrected_int8_weights_have_no_mean_output_error():
    # Inputs with a non-zero mean, where the rounding of W to int8 shifts the mean output.
    rng = np.random.default_rng(1)
    calibration = [{"x": rng.uniform(0, 1, (2, 8)).astype(np.float32)} for _ in range(64)]
    held_out = [{"x": rng.uniform(0, 1, (2, 8)).astype(np.float32)} for _ in range(64)]
    mod = prepare_for_quantization(WithBias)
    corrections = measure_bias_corrections(mod, calibration, ["h"])

    # The measurement is E[x] (W - Wq), computed here in float64 (tolerance: float32 accumulation of 8 terms).
    w_q, scale = quantize_per_channel(W, 1)
    mean_x = np.mean([c["x"] for c in calibration], axis=(0, 1), dtype=np.float64)
    expected = mean_x @ (W.astype(np.float64) - w_q * scale.reshape(1, 16))
    np.testing.assert_allclose(corrections["h"], expected, rtol=1e-4, atol=1e-7)

    def outputs(module):
        vm = relax.VirtualMachine(tvm.compile(module, host_target()), tvm.cpu())
        return np.stack([vm["main"](tvm.runtime.tensor(s["x"])).numpy() for s in held_out])

    reference = outputs(mod)

    def mean_error(module):
        return np.abs(np.mean(reference - outputs(QuantizeWeights()(module)), axis=(0, 1)))  # per output channel

    before, after = mean_error(mod), mean_error(CorrectBias(corrections)(mod))
    print(f"mean |error| per channel: {before.mean():.2e} -> {after.mean():.2e}")
    # Held-out data: the correction is fitted on other samples, so the error shrinks but does not vanish.
    assert after.mean() < 0.5 * before.mean()
