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
    assert "machine load (1-min average):" in table
    data = json.loads(out_json.read_text())
    rows = {r["name"]: r for r in data["rows"]}
    assert rows["onnxruntime fp32"]["ratio_to_ort"] == 1.0
    ours = rows["tvmcompress host (default build)"]
    assert ours["median_ms"] > 0 and ours["p90_ms"] >= ours["median_ms"]
    assert data["config"]["runs"] == 30 and data["machine"]["cores"] >= 1
    assert len(data["load"]["before"]) == 3 and data["load"]["logical_cores"] >= 1
    assert isinstance(data["stable"], bool) and data["attempts"] >= 1
    assert data["stable"] == (data["warnings"] == [])


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


# ---- stability: a fake clock decides how long each call "took" -----------------------------------------------


class _FakeClock:
    """perf_counter stand-in: each contender call advances time by what `durations(name, call_index)` says."""

    def __init__(self, durations):
        self.now, self.durations, self.calls = 0.0, durations, {}

    def contender(self, name):
        def run():
            index = self.calls.get(name, 0)
            self.calls[name] = index + 1
            self.now += self.durations(name, index) / 1e3

        return run

    def __call__(self):
        return self.now


def _contenders(clock, names=("onnxruntime fp32", "tvmcompress a", "tvmcompress b")):
    return {name: clock.contender(name) for name in names}


def test_steady_timings_are_stable_in_one_attempt():
    from tvmcompress.bench import time_contenders

    clock = _FakeClock(lambda name, i: {"onnxruntime fp32": 10.0, "tvmcompress a": 5.0, "tvmcompress b": 20.0}[name]
                       * (1.1 if i % 7 == 0 else 1.0))
    result = time_contenders(_contenders(clock), BenchConfig(runs=30), clock)
    assert result.stable and result.attempts == 1 and result.warnings == ()
    assert {r.name: r.ratio_to_ort for r in result.rows} == {"onnxruntime fp32": 1.0, "tvmcompress a": 0.5,
                                                             "tvmcompress b": 2.0}
    assert len(result.load_before) == 3 and result.cores >= 1


def test_contender_slowed_in_later_rounds_is_repeated_then_warned():
    """The reported failure: one artifact's ratio to ORT jumps for part of the run (load hitting its turns)."""
    from tvmcompress.bench import time_contenders

    config = BenchConfig(runs=30)
    calls_per_attempt = config.warmup + (config.runs // config.turn) * (config.settle + config.turn)

    def durations(name, i):
        if name == "tvmcompress a" and (i % calls_per_attempt) > calls_per_attempt // 2:
            return 300.0  # 30x ORT in the second half of every attempt
        return 10.0

    clock = _FakeClock(durations)
    result = time_contenders(_contenders(clock), config, clock)
    assert not result.stable and result.attempts == config.max_attempts
    assert any("tvmcompress a: its ratio to onnxruntime fp32 moved" in w for w in result.warnings)
    assert not any("tvmcompress b" in w for w in result.warnings)
    assert "rerun on an idle machine" in result.warnings[-1]


def test_noise_in_the_first_attempt_only_is_repeated_away():
    from tvmcompress.bench import time_contenders

    config = BenchConfig(runs=30)
    calls_per_attempt = config.warmup + (config.runs // config.turn) * (config.settle + config.turn)
    # Every 4th run of the first attempt takes 10x: p90 far above the median.
    clock = _FakeClock(lambda name, i: 100.0 if (i < calls_per_attempt and i % 4 == 0) else 10.0)
    result = time_contenders(_contenders(clock), config, clock)
    assert result.stable and result.attempts == 2 and result.warnings == ()
    assert all(r.median_ms == pytest.approx(10.0) for r in result.rows)


def test_stability_limits_are_validated():
    with pytest.raises(tvmcompress.TvmcompressError, match="stability limits"):
        BenchConfig(runs=30, max_ratio_drift=1.0)
