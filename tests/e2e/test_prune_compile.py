"""`tvmcompress compile --prune`: the artifact runs, the manifest lists the pass and report.json the pruning."""

from __future__ import annotations

import json

import numpy as np
import pytest

import tvmcompress
from tvmcompress.config import CompileOptions
from tvmcompress.passes.prune_config import PruneConfig

pytestmark = pytest.mark.slow


def test_compile_with_channel_pruning_and_reconstruction(tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "numerics"))
    from digits_models import EXAMPLES, digits_split

    x_train, x_test, _, y_test = digits_split()
    calibration = tmp_path / "cal.npz"
    np.savez(calibration, input=x_train[:200])
    options = CompileOptions.create(calibration=str(calibration), prune=PruneConfig.parse("channel:0.5", "bn"))
    artifact = tvmcompress.compile(str(EXAMPLES / "digits_cnn.onnx"), "host", output=tmp_path / "out", options=options)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    expected_pass = {"name": "tvmcompress.prune", "options": PruneConfig.parse("channel:0.5", "bn").to_json()}
    assert expected_pass in manifest["passes"]
    pruning = report["pruning"]
    assert pruning["reconstructed"] and pruning["macs_before"] / pruning["macs_after"] > 3.0
    assert [(l["kept"], l["total"], l["criterion"]) for l in pruning["layers"]] == [
        (8, 16, "bn"), (16, 32, "bn"), (10, 10, "bn")]
    assert "Pruning (channel:0.5, bn)" in (tmp_path / "out" / "report.html").read_text()
    name = artifact.inputs[0].name
    logits = artifact.run_batches({name: x_test[:100]})[artifact.outputs[0].name]
    assert np.mean(logits.argmax(-1) == y_test[:100]) >= 0.95  # the pruned, re-fitted model still classifies
