"""bench: interleaved timing rows, ratios relative to ONNX Runtime fp32, and its input checks. No timing asserts."""

from __future__ import annotations

import json

import onnx
import pytest

import tvmcompress
import zoo
from tvmcompress.bench import BenchConfig, benchmark
from tvmcompress.cli import main


def test_bench_rows_and_json(tmp_path, capsys):
    model = tmp_path / "mlp.onnx"
    onnx.save(zoo.mlp(), model)
    out_json = tmp_path / "bench.json"
    assert main(["-q", "bench", str(model), "--runs", "30", "--json", str(out_json)]) == 0
    table = capsys.readouterr().out
    assert "onnxruntime fp32" in table and "tvmcompress host (default build)" in table
    data = json.loads(out_json.read_text())
    rows = {r["name"]: r for r in data["rows"]}
    assert rows["onnxruntime fp32"]["ratio_to_ort"] == 1.0
    ours = rows["tvmcompress host (default build)"]
    assert ours["median_ms"] > 0 and ours["p90_ms"] >= ours["median_ms"]
    assert data["config"]["runs"] == 30 and data["machine"]["cores"] >= 1


def test_bench_refuses_too_few_runs():
    with pytest.raises(tvmcompress.TvmcompressError, match="at least 30"):
        BenchConfig(runs=5)


def test_bench_refuses_foreign_artifact(tmp_path):
    model = tmp_path / "mlp.onnx"
    onnx.save(zoo.mlp(), model)
    tvmcompress.compile(str(model), "riscv64", output=str(tmp_path / "rv"))
    with pytest.raises(tvmcompress.TvmcompressError, match="compile it for --target host"):
        benchmark(str(model), {"rv": str(tmp_path / "rv")}, BenchConfig(runs=30))


def test_bench_times_an_artifact_with_separate_weights(tmp_path):
    model = tmp_path / "mlp.onnx"
    onnx.save(zoo.mlp(), model)
    options = tvmcompress.CompileOptions.create(separate_weights=True)
    tvmcompress.compile(str(model), "host", output=str(tmp_path / "sep"), options=options)
    rows = {r.name: r for r in benchmark(str(model), {"separate": str(tmp_path / "sep")}, BenchConfig(runs=30))}
    assert rows["tvmcompress separate"].median_ms > 0
