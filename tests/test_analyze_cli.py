"""`tvmcompress analyze` and `compile --quantize int8 --eval-data [--accuracy-budget]` on the digits CNN.

Data: examples/train_digits.py's split; calibration is 40 training images, eval data is examples/digits_test.npz
(360 test images with labels). The numbers asserted are accuracies on those 360 images (one image = 0.28 points).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tvmcompress.cli import main

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
MODEL = str(EXAMPLES / "digits_cnn.onnx")
EVAL = str(EXAMPLES / "digits_test.npz")
LAYERS = ["conv2d_0", "conv2d_1", "matmul_0"]


@pytest.fixture(scope="module")
def calibration_npz(tmp_path_factory):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    x_train, _, _, _ = train_test_split(x, digits.target, test_size=0.2, random_state=0, stratify=digits.target)
    path = tmp_path_factory.mktemp("data") / "calibration.npz"
    np.savez(path, input=x_train[:40])
    return str(path)


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_accuracy_budget_needs_eval_data(tmp_path, calibration_npz, capsys):
    out = tmp_path / "out"
    code = main(["compile", MODEL, "-o", str(out), "--quantize", "int8", "--calibration", calibration_npz,
                 "--accuracy-budget", "1"])
    assert code == 2 and not out.exists()
    assert _one_error_line(capsys) == (
        "tvmcompress: error: --accuracy-budget needs --quantize int8 and --eval-data FILE.npz to measure on"
    )


def test_analyze_needs_calibration(capsys):
    assert main(["analyze", MODEL]) == 2
    assert "the following arguments are required: --calibration" in _one_error_line(capsys)


def test_analyze_json_names_every_layer(calibration_npz, capsys):
    assert main(["analyze", MODEL, "--calibration", calibration_npz, "--eval-data", EVAL, "--json"]) == 0
    analysis = json.loads(capsys.readouterr().out)
    assert analysis["metric"] == "top1_accuracy" and analysis["eval_samples"] == 360
    assert analysis["fp32_metric"] == pytest.approx(99.167, abs=1e-3)
    assert [row["name"] for row in analysis["layers"]] == LAYERS
    for row in analysis["layers"]:
        # minmax int8 of one layer: its output keeps well above 20 dB and the model loses at most 3 images.
        assert row["sqnr_db"] > 20.0, row
        assert row["metric"] >= analysis["fp32_metric"] - 1.0, row
        assert row["metric_drop"] == pytest.approx(analysis["fp32_metric"] - row["metric"], abs=1e-3)


@pytest.mark.slow
def test_compile_accuracy_budget_records_fallback(tmp_path, calibration_npz, capsys):
    out = tmp_path / "out"
    code = main(["compile", MODEL, "-o", str(out), "--quantize", "int8", "--calibration", calibration_npz,
                 "--calibration-method", "percentile", "--percentile", "50.1", "--eval-data", EVAL,
                 "--accuracy-budget", "1"])
    assert code == 0, capsys.readouterr().err
    manifest = json.loads((out / "manifest.json").read_text())
    result = manifest["quantization"]["accuracy_budget"]
    print(result)
    assert result["int8_metric_before"] < result["fp32_metric"] - 1.0
    assert result["within_budget"] and result["final_metric"] >= result["fp32_metric"] - 1.0
    assert result["excluded_layers"] and set(result["excluded_layers"]) <= set(LAYERS)
    assert manifest["quantization"]["excluded"] == sorted(result["excluded_layers"])
    assert "eval_data" in manifest["hashes"]["inputs"]
    report = json.loads((out / "report.json").read_text())
    assert report["quantization_accuracy"]["accuracy_budget"] == result
    assert [row["name"] for row in report["quantization_accuracy"]["analysis"]["layers"]] == LAYERS
    assert "Accuracy budget" in (out / "report.html").read_text()


@pytest.mark.slow
def test_compile_with_eval_data_records_metrics(tmp_path, calibration_npz, capsys):
    out = tmp_path / "out"
    code = main(["compile", MODEL, "-o", str(out), "--quantize", "int8", "--calibration", calibration_npz,
                 "--eval-data", EVAL])
    assert code == 0, capsys.readouterr().err
    quantization = json.loads((out / "manifest.json").read_text())["quantization"]
    result = quantization["eval"]
    assert result["metric"] == "top1_accuracy" and result["samples"] == 360
    assert result["fp32_metric"] == pytest.approx(99.167, abs=1e-3)
    assert result["int8_metric"] >= result["fp32_metric"] - 1.0  # minmax int8 loses at most 3 of 360 images
    assert result["int8_sqnr_db"] > 20.0
    assert "analysis" not in quantization and "accuracy_budget" not in quantization  # no budget: no per-layer builds
    assert sorted(quantization["bias_correction"]) == LAYERS
    report = json.loads((out / "report.json").read_text())
    assert report["quantization_accuracy"] == {"eval": result}
