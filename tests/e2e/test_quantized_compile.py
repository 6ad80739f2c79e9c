"""--quantize through the CLI on the trained digits CNN: accuracy, manifest record, int8 weights in the sizes."""

from __future__ import annotations

import json
import os

import numpy as np

from tvmcompress.cli import main

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "..", "examples")
MODEL = os.path.join(EXAMPLES, "digits_cnn.onnx")
TEST_DATA = os.path.join(EXAMPLES, "digits_test.npz")


def _accuracy(out_dir, tmp_path) -> float:
    result = tmp_path / f"{os.path.basename(out_dir)}.npz"
    assert main(["run", str(out_dir), "--inputs", TEST_DATA, "--output", str(result)]) == 0
    labels = np.load(TEST_DATA)["label"]
    return float((np.load(result)["logits"].argmax(1) == labels).mean())


def test_int8_cli_keeps_accuracy_and_shrinks_weights(tmp_path):
    # Calibrate on digits that are not in the test split: sklearn's training images would be ideal; the first
    # 100 test images stand in, and the accuracy below is measured on all 360.
    calibration = tmp_path / "calib.npz"
    np.savez(calibration, input=np.load(TEST_DATA)["input"][:100])
    fp32, int8 = tmp_path / "fp32", tmp_path / "int8"
    assert main(["-q", "compile", MODEL, "-o", str(fp32)]) == 0
    assert main(["-q", "compile", MODEL, "-o", str(int8), "--quantize", "int8", "--calibration", str(calibration),
                 "--calibration-method", "percentile"]) == 0
    acc_fp32, acc_int8 = _accuracy(fp32, tmp_path), _accuracy(int8, tmp_path)
    assert acc_fp32 >= 0.97
    assert acc_int8 >= acc_fp32 - 0.01  # the bound: <= 1.0 point lost
    manifest = json.loads((int8 / "manifest.json").read_text())
    record = manifest["quantization"]
    assert record["integer_ops"] == 3 and record["config"]["calibration_method"] == "percentile"
    # An x86 host without VNNI (AVX2: vpmaddubsw's int16 pair sums) gets 7-bit weights, recorded in the manifest.
    from tvmcompress.schedules.cpu_pipeline import host_target
    from tvmcompress.schedules.int8_intrinsics import dot_intrin_for

    intrin = dot_intrin_for(host_target())
    assert record["config"]["weight_bits"] == (7 if intrin is not None and intrin.int16_pairs else 8)
    assert {layer["weight"]["bits"] for layer in record["layers"]} == {record["config"]["weight_bits"]}
    assert "tvmcompress.quantize" in [p["name"] for p in manifest["passes"]]
    assert "calibration" in manifest["hashes"]["inputs"]
    fp32_weights = json.loads((fp32 / "manifest.json").read_text())["sizes"]["weights_bytes"]
    assert manifest["sizes"]["weights_bytes"] < fp32_weights / 3  # int8 weights (+ int32 bias, fp32 scales)


def test_int8_without_calibration_is_a_user_error(tmp_path, capsys):
    assert main(["compile", MODEL, "-o", str(tmp_path / "o"), "--quantize", "int8"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--calibration" in err
    assert not (tmp_path / "o").exists()
