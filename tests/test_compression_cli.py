"""`compile --cluster-bits / --compress-weights / --sparse-min-speedup`: user errors, and one end-to-end build."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import tvmcompress
from tvmcompress.cli import main
from tvmcompress.weights_file import read_header

CNN = Path(__file__).resolve().parents[1] / "examples" / "digits_cnn.onnx"


@pytest.mark.parametrize("flags,message", [
    (["--cluster-bits", "9"], "tvmcompress: error: --cluster-bits must be an integer from 1 to 8, got 9"),
    (["--sparse-min-speedup", "0"], "tvmcompress: error: --sparse-min-speedup must be positive, got 0.0"),
])
def test_bad_flags_are_one_line_errors(tmp_path, capsys, flags, message):
    out = tmp_path / "out"
    code = main(["compile", str(CNN), "-o", str(out), *flags])
    err = capsys.readouterr().err
    assert code == 2 and err.strip() == message
    assert not out.exists()


@pytest.mark.slow
def test_clustered_compressed_float_build_runs_and_reports_sizes(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["compile", str(CNN), "-o", str(out), "--cluster-bits", "4", "--compress-weights"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    sizes = manifest["sizes"]["weights_breakdown"]
    codec, entries = read_header(out / "weights.bin")
    assert codec == "tvcw" and manifest["separate_weights"] is True
    assert sizes["weights_file_stored"] == sum(e.stored_bytes for e in entries)
    # 16 float32 values per layer: palette + ~4-bit indices, under a fifth of the fp32 weights.
    assert sizes["dense_fp32"] / sizes["weights_file_stored"] >= 5
    assert all(layer["max_values_per_channel"] <= 16 for layer in manifest["clustering"]["layers"].values())
    test = np.load(CNN.parent / "digits_test.npz")
    logits = tvmcompress.load(out).run_batches({"input": test["input"]})["logits"]
    # fp32 is 99.17% on these 360 images; 16 shared float values per layer keep it within a point.
    assert 100.0 * np.mean(logits.argmax(-1) == test["label"]) >= 98.0
