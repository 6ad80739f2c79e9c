"""Accuracy of fp16, bf16 and dynamic-int8 models, measured by running them (tier: backend, this CPU).

Acceptance from the quantization issue: fp16 and bf16 lose <= 0.2 points of test accuracy against fp32 (on 360
images that is no image net); dynamic-int8 is held to the int8 threshold, 1.0 point.
"""

from __future__ import annotations

import pytest
from digits_models import accuracy

from tvmcompress.passes.quantize import quantize
from tvmcompress.passes.quantize_config import QuantizeConfig


@pytest.mark.parametrize("mode,allowed_loss", [("fp16", 0.2), ("bf16", 0.2), ("dynamic-int8", 1.0)])
def test_mode_accuracy_loss(digits_models, digits_data, fp32_accuracy, mode, allowed_loss):
    _, x_test, y_test = digits_data
    converted, record = quantize(digits_models["digits_cnn"], QuantizeConfig(mode=mode))
    if mode == "dynamic-int8":
        assert record["integer_ops"] == 3
    converted_accuracy = accuracy(converted, x_test, y_test)
    print(f"digits_cnn {mode}: {converted_accuracy:.2f} % (fp32 {fp32_accuracy['digits_cnn']:.2f} %)")
    assert converted_accuracy >= fp32_accuracy["digits_cnn"] - allowed_loss
