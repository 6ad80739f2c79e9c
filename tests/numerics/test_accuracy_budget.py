"""--accuracy-budget on a case that needs it (tier: backend, this machine's CPU).

The digits CNN (99.2 % fp32) calibrated badly on purpose: one batch of 40 training images and the 50.1th
percentile, so that activation ranges clip about half of each tensor's spread. int8 then loses more than the
1-point budget; the fallback must return the most sensitive layer(s) to float and end within budget, and the
numbers it records must be what the returned module measures. Eval data: the 360 test images with labels.

Tolerance: exact. Every number is an accuracy on the same 360 images, recomputed here on the returned module.
"""

from __future__ import annotations

import pytest
from digits_models import BATCH, accuracy

from tvmcompress.errors import TvmcompressError
from tvmcompress.passes.quantize_config import QuantizeConfig
from tvmcompress.passes.quant_analysis import EvalData, quantize_within_budget, sensitivity_order

BUDGET = 1.0


def _eval_data(mod, x_test, y_test) -> EvalData:
    name = mod["main"].params[0].name
    return EvalData(tuple({name: x_test[i : i + BATCH]} for i in range(0, len(x_test), BATCH)), y_test)


def _calibration(mod, x_train, batches: int):
    name = mod["main"].params[0].name
    return [{name: x_train[i * BATCH : (i + 1) * BATCH]} for i in range(batches)]


def test_budget_fallback_returns_sensitive_layers_to_float(digits_models, digits_data, fp32_accuracy):
    x_train, x_test, y_test = digits_data
    mod = digits_models["digits_cnn"]
    bad = QuantizeConfig(calibration_method="percentile", percentile=50.1)
    quantized, record = quantize_within_budget(
        mod, bad, _calibration(mod, x_train, 1), _eval_data(mod, x_test, y_test), BUDGET
    )
    result = record["accuracy_budget"]
    print(result)
    assert result["metric"] == "top1_accuracy"
    assert result["fp32_metric"] == pytest.approx(fp32_accuracy["digits_cnn"], abs=1e-3)
    # The case needs the fallback: the badly calibrated int8 model is over budget ...
    assert result["int8_metric_before"] < result["fp32_metric"] - BUDGET
    # ... and the fallback ends within it, naming the layers in the order of the single-layer analysis.
    assert result["within_budget"] and result["final_metric"] >= result["fp32_metric"] - BUDGET
    assert 1 <= len(result["excluded_layers"]) < len(record["layers"])
    assert result["excluded_layers"] == sensitivity_order(record["analysis"])[: len(result["excluded_layers"])]
    assert record["excluded"] == sorted(result["excluded_layers"])
    # The remaining layers still run in int8 and the recorded final metric is the returned module's.
    assert record["integer_ops"] == len(record["layers"]) - len(result["excluded_layers"])
    assert accuracy(quantized, x_test, y_test) == pytest.approx(result["final_metric"], abs=1e-3)


@pytest.mark.slow  # three more builds; the fallback case above is the acceptance test
def test_budget_already_met_excludes_nothing(digits_models, digits_data):
    x_train, x_test, y_test = digits_data
    mod = digits_models["digits_cnn"]
    _, record = quantize_within_budget(
        mod, QuantizeConfig(), _calibration(mod, x_train, 5), _eval_data(mod, x_test, y_test), BUDGET
    )
    result = record["accuracy_budget"]
    assert result["excluded_layers"] == [] and record["excluded"] == []
    assert result["final_metric"] == result["int8_metric_before"] >= result["fp32_metric"] - BUDGET
    assert "analysis" not in record  # no fallback, no analysis computed


def test_labels_must_match_predictions(digits_models, digits_data):
    x_train, x_test, y_test = digits_data
    mod = digits_models["digits_cnn"]
    with pytest.raises(TvmcompressError, match="eval data has 359 labels for 360 predictions"):
        quantize_within_budget(mod, QuantizeConfig(), _calibration(mod, x_train, 1),
                               _eval_data(mod, x_test, y_test[:-1]), BUDGET)
