"""Accuracy of static int8 models, measured by running them (tier: backend, this machine's CPU).

Acceptance from the quantization issue: int8 with each calibration method loses <= 1.0 point of test accuracy
against fp32. Models: the bundled digits CNN (99.2 % fp32) and an MLP trained here on the same data (see
digits_models.py). Calibration uses 200 training images, never test images. fp16/bf16/dynamic-int8 are in
test_low_precision_accuracy.py.

Tolerance: the issue's threshold; on 360 test images one image is 0.28 points, so int8 may lose at most three
images net.
"""

from __future__ import annotations

import pytest
from digits_models import accuracy, calibration

from tvmcompress.passes.quantize import quantize
from tvmcompress.passes.quantize_config import QuantizeConfig

# Each case compiles twice (~8 s on 2 shared cores): the MLP's histogram methods are in the slow tier.
INT8_CASES = [
    *(pytest.param("digits_cnn", method) for method in ("minmax", "percentile", "entropy", "mse")),
    pytest.param("digits_mlp", "minmax"),
    *(pytest.param("digits_mlp", method, marks=pytest.mark.slow) for method in ("percentile", "entropy", "mse")),
]


def test_fp32_baselines(fp32_accuracy):
    assert fp32_accuracy["digits_cnn"] >= 97.0 and fp32_accuracy["digits_mlp"] >= 95.0


@pytest.mark.parametrize("model,method", INT8_CASES)
def test_int8_loses_at_most_one_point(digits_models, digits_data, fp32_accuracy, model, method):
    x_train, x_test, y_test = digits_data
    mod = digits_models[model]
    quantized, record = quantize(mod, QuantizeConfig(calibration_method=method), calibration(mod, x_train))
    assert record["integer_ops"] == len(record["layers"])  # every conv/matmul runs in int8 x int8 -> int32
    int8_accuracy = accuracy(quantized, x_test, y_test)
    print(f"{model} int8 {method}: {int8_accuracy:.2f} % (fp32 {fp32_accuracy[model]:.2f} %)")
    assert int8_accuracy >= fp32_accuracy[model] - 1.0
