"""Accuracy of the trained digits CNN (examples/digits_cnn.onnx) after pruning, without retraining.

The test set is examples/digits_test.npz (360 images); calibration (the data the criterion measures and
reconstruction fits on) is the first 1400 training images, which the test set does not contain. fp32 accuracy is
99.17% (3 errors); each further error costs 0.28 points.

- channel:0.5 (activation criterion) with reconstruction loses at most 1.0 point (measured 98.89%); without
  reconstruction it loses far more (measured 54.7%), which is what reconstruction is for.
- unstructured:0.8 (global magnitude, then re-chosen and re-fitted weights) loses at most 1.0 point.
"""

from __future__ import annotations

import pytest
from digits_models import BATCH, accuracy

from tvmcompress.passes.prune_config import PruneConfig
from tvmcompress.passes.prune import prune

# 35 batches: the re-fitted final Dense layer sees one equation per image, so generalization wants many; with 200
# images channel:0.5 measured 97-98%.
CALIBRATION_IMAGES = 1400


def _calibration(mod, x_train):
    name = mod["main"].params[0].name
    return [{name: x_train[i : i + BATCH]} for i in range(0, CALIBRATION_IMAGES, BATCH)]


def _pruned_accuracy(digits_models, digits_data, spec, criterion, reconstruct):
    x_train, x_test, y_test = digits_data
    mod = digits_models["digits_cnn"]
    pruned, record = prune(mod, PruneConfig.parse(spec, criterion, reconstruct), _calibration(mod, x_train))
    return accuracy(pruned, x_test, y_test), record


@pytest.mark.slow
def test_channel_pruning_with_reconstruction_loses_at_most_one_point(digits_models, digits_data, fp32_accuracy):
    with_fit, record = _pruned_accuracy(digits_models, digits_data, "channel:0.5", "activation", True)
    without_fit, _ = _pruned_accuracy(digits_models, digits_data, "channel:0.5", "activation", False)
    baseline = fp32_accuracy["digits_cnn"]
    print(f"digits_cnn channel:0.5 (activation): fp32 {baseline:.2f}%, pruned {without_fit:.2f}%, "
          f"pruned + reconstruction {with_fit:.2f}%; MACs {record['macs_before']} -> {record['macs_after']}")
    assert record["macs_before"] / record["macs_after"] > 3.0  # 16->8 and 32->16 channels
    assert [(l["kept"], l["total"]) for l in record["layers"]] == [(8, 16), (16, 32), (10, 10)]
    assert baseline - with_fit <= 1.0
    assert without_fit < with_fit


@pytest.mark.slow
def test_unstructured_pruning_with_reconstruction_loses_at_most_one_point(digits_models, digits_data, fp32_accuracy):
    with_fit, record = _pruned_accuracy(digits_models, digits_data, "unstructured:0.8", "l1", True)
    baseline = fp32_accuracy["digits_cnn"]
    layers = record["layers"]
    total_sparsity = sum(l["sparsity"] * l["weights"] for l in layers) / sum(l["weights"] for l in layers)
    print(f"digits_cnn unstructured:0.8: fp32 {baseline:.2f}%, pruned + reconstruction {with_fit:.2f}%; "
          f"per-layer sparsity {[l['sparsity'] for l in record['layers']]}")
    assert abs(total_sparsity - 0.8) < 1e-3 and record["macs_before"] == record["macs_after"]
    assert baseline - with_fit <= 1.0
