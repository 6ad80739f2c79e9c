"""Model fuzzer (issue 18): seeded structural and byte mutations of small valid ONNX models, each compiled by the
CLI; every one must end in exit 0 (verified against ONNX Runtime) or one refusal line with exit 2, with no crash,
traceback, hang, temp debris or touched input. The mutations and the per-model checks live in model_mutations.py.

Default suite: 30 fixed seeds in one worker. Slow tier: 1,000 fixed seeds over two workers. Findings of the
campaign are pinned below as regression tests with their minimized mutation.
"""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from . import model_mutations as mm
from .safety_helpers import assert_refused, cli, save_with_external_data, snapshot, tiny_model


def _assert_clean(results: list[dict], expected: int) -> None:
    summary = mm.summarize(results)
    assert summary["models"] == expected, summary
    assert summary["findings"] == [], json.dumps(summary["findings"], indent=1)[:6000]
    # The fuzzer must reach both ends: models that still compile and models refused at load/check.
    assert summary["refused"] > 0


def test_mutations_are_deterministic():
    for seed in (0, 7, 123):
        assert mm.mutate(seed) == mm.mutate(seed)
    assert mm.mutate(1)[0] != mm.mutate(2)[0]


def test_fuzz_default_seeds(tmp_path):
    results = mm.run_batch(list(range(30)), tmp_path)
    _assert_clean(results, 30)


@pytest.mark.slow
def test_fuzz_campaign_1000(tmp_path):
    results = mm.run_campaign(list(range(1000)), tmp_path, jobs=2)
    _assert_clean(results, 1000)
    assert mm.summarize(results)["compiled"] > 0


# --- regressions found by the campaign, minimized


@pytest.mark.parametrize("location", ["../outside.bin", "ABSOLUTE"])
def test_external_data_outside_model_directory_is_refused(tmp_path, location):
    """Seed 11: an initializer whose external data `location` points outside the model's directory made onnx
    raise ValidationError from load_external_data_for_model, which ended in a traceback (exit 1)."""
    model = tiny_model()
    project = tmp_path / "project"
    project.mkdir()
    save_with_external_data(model, project / "model.onnx")
    # A file that exists outside the model's directory: a location onnx refuses to follow.
    (tmp_path / "outside.bin").write_bytes(bytes(64))
    location = str(tmp_path / "outside.bin") if location == "ABSOLUTE" else location
    m = onnx.load(str(project / "model.onnx"), load_external_data=False)
    for entry in m.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = location
    onnx.save(m, str(project / "model.onnx"))
    before = snapshot(tmp_path)
    result = cli("compile", str(project / "model.onnx"), "-o", str(tmp_path / "out"))
    line = assert_refused(result, "external data", "export the model again")
    assert "outside" in line
    assert snapshot(tmp_path) == before
