import logging

import numpy as np
import pytest
import tvm
from tvm.script import ir as I
from tvm.script import relax as R

from tvmcompress.errors import TvmcompressError
from tvmcompress.passes.calibrate import ExposeObservationPoints, calibrate, observation_points
from tvmcompress.passes.quantize_config import QParams, QuantizeConfig

W = np.eye(4, dtype=np.float32)


@I.ir_module
class Before:
    @R.function
    def main(x: R.Tensor((1, 4), "float32")) -> R.Tensor((1, 4), "float32"):
        with R.dataflow():
            y = R.matmul(x, R.const(W))
            r = R.nn.relu(y)
            z = R.matmul(r, R.const(2 * W))
            R.output(z)
        return z


@I.ir_module
class Expected:
    @R.function
    def main(x: R.Tensor((1, 4), "float32")):
        y = R.matmul(x, R.const(W))
        r = R.nn.relu(y)
        z = R.matmul(r, R.const(2 * W))
        return (z, x, r)


def test_observation_points_are_activations_of_quantizable_ops():
    assert observation_points(Before) == ["x", "r"]
    assert observation_points(Before, exclude=("matmul_1",)) == ["x"]


def test_expose_observation_points_returns_them_after_the_output():
    tvm.ir.assert_structural_equal(ExposeObservationPoints(["x", "r"])(Before), Expected)


def test_expose_observation_points_rejects_unknown_name():
    with pytest.raises(ValueError, match="nope"):
        ExposeObservationPoints(["nope"])(Before)


def _samples():
    # x in [-1.0, 2.55] over the samples; r = relu(x) in [0, 2.55].
    return [{"x": np.array([[-1.0, 0.5, 2.0, 0.0]], np.float32)}, {"x": np.array([[0.0, 2.55, -0.5, 1.0]], np.float32)}]


def test_calibrate_minmax_gives_exact_qparams(caplog):
    with caplog.at_level(logging.INFO, logger="tvmcompress.passes.calibrate"):
        table = calibrate(Before, iter(_samples()), QuantizeConfig(calibration_method="minmax"))
    # The observed extremes are float32 values: 2.55 is 2.5499999523.
    high = float(np.float32(2.55))
    assert table == {"x": QParams.from_range(-1.0, high), "r": QParams.from_range(0.0, high)}
    assert table["r"].zero_point == -128
    assert any("2 samples done" in message for message in caplog.messages)  # progress is logged


@pytest.mark.parametrize("method", ["percentile", "entropy", "mse"])
def test_calibrate_histogram_methods_stay_within_minmax(method):
    rng = np.random.default_rng(0)
    samples = [{"x": rng.normal(size=(1, 4)).astype(np.float32)} for _ in range(50)]
    minmax = calibrate(Before, samples, QuantizeConfig(calibration_method="minmax"))
    table = calibrate(Before, samples, QuantizeConfig(calibration_method=method, activation_dtype="uint8"))
    for name, qp in table.items():
        assert qp.dtype == "uint8" and qp.scale <= minmax[name].scale * (1 + 1e-6)


def test_calibrate_errors_name_the_fix():
    with pytest.raises(TvmcompressError, match="empty"):
        calibrate(Before, [], QuantizeConfig())
    with pytest.raises(TvmcompressError, match="lacks input"):
        calibrate(Before, [{"y": np.zeros((1, 4), np.float32)}], QuantizeConfig())
