"""Same model, same options -> byte-identical model.so and identical manifest hashes."""

from __future__ import annotations

import json

import onnx
import pytest

import tvmcompress
import zoo


def test_two_builds_are_byte_identical(tmp_path):
    path = tmp_path / "cnn.onnx"
    onnx.save(zoo.cnn(), path)
    first = tvmcompress.compile(str(path), "host", output=str(tmp_path / "a"))
    second = tvmcompress.compile(str(path), "host", output=str(tmp_path / "b"))
    assert open(first.library_path, "rb").read() == open(second.library_path, "rb").read()
    assert first.manifest["hashes"] == second.manifest["hashes"]
    strip = lambda m: {k: v for k, v in m.items() if k != "build_seconds"}  # noqa: E731 - wall time differs
    assert strip(first.manifest) == strip(second.manifest)
    report_a = json.loads((tmp_path / "a" / "report.json").read_text())
    report_b = json.loads((tmp_path / "b" / "report.json").read_text())
    assert strip(report_a) == strip(report_b)


def test_recompile_replaces_existing_output_atomically(tmp_path):
    path = tmp_path / "mlp.onnx"
    onnx.save(zoo.mlp(), path)
    out = tmp_path / "out"
    tvmcompress.compile(str(path), "host", output=str(out))
    first = (out / "model.so").stat().st_ino
    tvmcompress.compile(str(path), "host", output=str(out))
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.so", "relax_module.json", "report.html", "report.json"]
    assert (out / "model.so").stat().st_ino != first  # a new directory renamed over the old one, not files rewritten
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.")] == []
    # A file we did not write makes OUT no longer ours to replace (tests/robustness/test_output_safety.py).
    (out / "notes.txt").write_text("the user's")
    with pytest.raises(tvmcompress.TvmcompressError, match="notes.txt"):
        tvmcompress.compile(str(path), "host", output=str(out))
    assert (out / "notes.txt").read_text() == "the user's"
