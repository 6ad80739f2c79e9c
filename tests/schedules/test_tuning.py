"""Tuning: records reach the scheduled module, the default-vs-tuned fallback, and database reuse without measuring.

The first tests build no candidates: records are made by hand from schedules we write, so they run in seconds.
"""

from __future__ import annotations

import io
import json
import logging

import numpy as np
import pytest
import tvm
from tvm.s_tir import meta_schedule as ms

import zoo
from tvmcompress import frontend
from tvmcompress.config import TuneConfig
from tvmcompress.errors import TvmcompressError
from tvmcompress.schedules import cpu_pipeline, tuning

MARKER = "tvmcompress_test_marker"


@pytest.fixture(scope="module")
def lowered():
    target = cpu_pipeline.host_target(2)
    mod = frontend.import_to_relax(frontend.canonicalize(zoo.mlp()))
    with target:
        low = tvm.transform.Sequential(cpu_pipeline.cpu_lowering_passes(target))(mod)
    tasks = ms.relax_integration.extract_tasks(low, target)
    return target, mod, low, tasks


def _marked_record(task_mod: tvm.IRModule, database, target, run_s: float):
    """A record whose schedule annotates the task's first block: visible in the scheduled PrimFunc."""
    sch = tvm.s_tir.Schedule(task_mod)
    block = sch.get_child_blocks(sch.get_sblock("root"))[0]
    sch.annotate(block, MARKER, 1)
    args = ms.arg_info.ArgInfo.from_prim_func(task_mod["main"])
    workload = database.commit_workload(task_mod)
    database.commit_tuning_record(ms.database.TuningRecord(sch.trace, workload, [run_s], target, args))


def _marked_functions(mod: tvm.IRModule) -> list[str]:
    names = []
    for gvar, func in mod.functions_items():
        if isinstance(func, tvm.tirx.PrimFunc) and MARKER in func.script():
            names.append(gvar.name_hint)
    return names


def test_build_pipeline_applies_tuned_records(lowered):
    target, mod, _, tasks = lowered
    database = ms.database.MemoryDatabase()
    _marked_record(tasks[0].dispatched[0], database, target, 1e-6)
    with target:
        scheduled = tvm.transform.Sequential(cpu_pipeline.cpu_schedule_passes(target, database))(mod)
        untuned = tvm.transform.Sequential(cpu_pipeline.cpu_schedule_passes(target))(mod)
    # The tuned task carries the record's schedule; without the database nothing does.
    assert len(_marked_functions(scheduled)) == 1
    assert _marked_functions(untuned) == []
    # Every other function still got a default schedule.
    for _, func in scheduled.functions_items():
        if isinstance(func, tvm.tirx.PrimFunc):
            assert func.attrs.get("tirx.is_scheduled", False)


def test_tuned_build_still_computes_the_model(lowered):
    target, mod, _, tasks = lowered
    database = ms.database.MemoryDatabase()
    for task in tasks:
        _marked_record(task.dispatched[0], database, target, 1e-6)
    ex = tvm.compile(mod, target, relax_pipeline=cpu_pipeline.cpu_pipeline(target, database))
    vm = tvm.relax.VirtualMachine(ex, tvm.cpu())
    feeds = zoo.random_inputs(zoo.mlp(), {})
    got = vm["main"](tvm.runtime.tensor(feeds["x"])).numpy()
    np.testing.assert_allclose(got, zoo.ort_outputs(zoo.mlp(), feeds)[0], rtol=1e-4, atol=1e-4)


def _decision(task_mod, target, use: str) -> dict:
    return {
        "task": "t", "workload": tuning._workload_key(task_mod), "target": tuning._target_key(target),
        "default_s": 2e-6, "tuned_s": 1e-6 if use == "tuned" else 3e-6, "use": use,
    }


def test_records_that_lost_to_the_default_are_not_applied(lowered, tmp_path):
    target, _, _, tasks = lowered
    database = tuning.open_database(str(tmp_path))
    for task in tasks[:2]:
        _marked_record(task.dispatched[0], database, target, 1e-6)
    decisions = [_decision(tasks[0].dispatched[0], target, "tuned"), _decision(tasks[1].dispatched[0], target, "default")]
    (tmp_path / tuning.DECISIONS_FILE).write_text(json.dumps(decisions))
    winners = tuning.winning_database(str(tmp_path), target)
    kept = [tuning._workload_key(r.workload.mod) for r in winners.get_all_tuning_records()]
    assert kept == [tuning._workload_key(tasks[0].dispatched[0])]


def test_covered_database_does_no_measuring(lowered, tmp_path, monkeypatch):
    target, _, low, tasks = lowered
    database = tuning.open_database(str(tmp_path))
    for task in tasks:
        _marked_record(task.dispatched[0], database, target, 1e-6)
    decisions = [_decision(t.dispatched[0], target, "tuned") for t in tasks]
    (tmp_path / tuning.DECISIONS_FILE).write_text(json.dumps(decisions))

    def no_measuring(*_args, **_kwargs):
        raise AssertionError("a database that covers every task must not measure")

    monkeypatch.setattr(ms.tune, "tune_tasks", no_measuring)
    monkeypatch.setattr(tuning, "_measure", no_measuring)
    # --tuning-db alone: a rebuild from the database, nothing measured (a budget would extend it, below).
    config = TuneConfig(database_dir=str(tmp_path))
    summary = tuning.tune(low, target, config, str(tmp_path / "work"), cpu_pipeline.apply_default_schedules(target))
    assert summary.measured_tasks == 0 and summary.trials == 0 and summary.tasks == len(tasks)


def test_a_budget_extends_a_covered_database(lowered, tmp_path, monkeypatch):
    """A second compile with --tune-trials and the same --tuning-db tunes the covered tasks again, searching from
    the database that already holds their records (the reported failure: it measured nothing)."""
    target, _, low, tasks = lowered
    database = tuning.open_database(str(tmp_path))
    for task in tasks:
        _marked_record(task.dispatched[0], database, target, 1e-6)
    (tmp_path / tuning.DECISIONS_FILE).write_text(json.dumps([_decision(t.dispatched[0], target, "tuned") for t in tasks]))
    searched = {}

    def fake_tune_tasks(*, tasks, database, **_kwargs):
        searched["tasks"] = len(tasks)
        searched["records"] = len(database.get_all_tuning_records())

    monkeypatch.setattr(ms.tune, "tune_tasks", fake_tune_tasks)
    # Every default takes 1 ms and every record 0.5 ms, in both the first timing and the duel.
    monkeypatch.setattr(tuning, "_measure", lambda mods, *_a: [
        5e-4 if MARKER in m["main"].script() else 1e-3 for m in mods])
    config = TuneConfig(trials=8, database_dir=str(tmp_path))
    summary = tuning.tune(low, target, config, str(tmp_path / "work"), cpu_pipeline.apply_default_schedules(target))
    assert summary.measured_tasks == len(tasks)
    assert searched["tasks"] >= 1 and searched["records"] == len(tasks)  # the search saw the earlier records
    assert {d.use for d in summary.decisions} == {"tuned"}


def test_progress_is_one_line_rewritten_in_place():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    class Result:
        def __init__(self, secs):
            self.run_secs, self.error_msg = [secs], None

    stream = Terminal()
    logger = logging.getLogger("tvmcompress.schedules.tuning")
    previous = logger.level
    logger.setLevel(logging.INFO)
    try:
        progress = tuning._ProgressCallback(64, stream=stream)
        progress.record(0, [Result(2e-3), Result(1e-3)])
        progress.record(1, [Result(4e-3)])
        progress.finish()
    finally:
        logger.setLevel(previous)
    text = stream.getvalue()
    assert text.count("\r") == 2 and text.count("\n") == 1 and text.endswith("\n")
    assert "tuning: 3/64 trials, 2 tasks measured, sum of best task latencies 5.000 ms" in text


def test_tune_config_validation():
    from tvmcompress import TvmcompressError
    from tvmcompress.config import RpcTarget

    with pytest.raises(TvmcompressError, match="tune.trials"):
        TuneConfig()
    with pytest.raises(TvmcompressError, match="at least 1"):
        TuneConfig(trials=0)
    with pytest.raises(TvmcompressError, match="HOST:PORT"):
        RpcTarget.parse("localhost", "key")
    with pytest.raises(TvmcompressError, match="--rpc-key"):
        RpcTarget.parse("127.0.0.1:9190", "")


def test_the_budget_goes_to_the_tasks_that_hold_the_time():
    failed = tuning.FAILED_RUN_S
    # 60% + 30% + 6% cover 95%; the 3% and 1% tails are not tuned; a default that failed is always tuned.
    assert tuning._worth_tuning([0.30, 0.03, 0.60, 0.01, 0.06], 0.005) == {0, 2, 4}
    assert tuning._worth_tuning([0.5, failed, 0.5], 0.005) == {0, 1, 2}
    # A task under the minimum share is skipped even before 95% is reached.
    assert tuning._worth_tuning([0.9, 0.004, 0.004], 0.005) == {0}


def test_a_default_decision_needs_no_record_but_a_tuned_one_does(lowered, tmp_path):
    target, _, _, tasks = lowered
    func = tasks[0].dispatched[0]
    database = tuning.open_database(str(tmp_path))
    default = tuning.TaskDecision(**_decision(func, target, "default"))
    tuned = tuning.TaskDecision(**_decision(func, target, "tuned"))
    assert tuning._covered(func, default, database)
    assert not tuning._covered(func, tuned, database)
    assert not tuning._covered(func, None, database)
    _marked_record(func, database, target, 1e-6)
    assert tuning._covered(func, tuned, database)


def test_time_share_policy_follows_the_time_and_moves_on_from_stale_tasks():
    policy = tuning.TimeSharePolicy([0.010, 0.004, 0.001], deadline=100.0)
    assert policy.pick([0, 1, 2], now=0.0) == 0
    policy.record(0, 0.003)  # tuned below task 1: task 1 now holds the most time
    assert policy.pick([0, 1, 2], now=1.0) == 1
    policy.record(1, 0.0045)  # no gain: discounted to 0.002, below task 0's 0.003
    assert policy.pick([0, 1, 2], now=2.0) == 0
    policy.record(0, 0.00299)  # under 1% better counts as no gain: 0.0015, below task 1's 0.002
    assert policy.pick([0, 1, 2], now=3.0) == 1
    assert policy.pick([2], now=4.0) == 2  # terminated tasks are not picked
    assert policy.pick([0, 1, 2], now=101.0) == -1  # past the deadline
    assert policy.pick([], now=5.0) == -1
    assert tuning.TimeSharePolicy([1.0], deadline=None).pick([0], now=1e12) == 0


def test_the_duel_times_default_and_tuned_alternately_and_keeps_the_fastest(monkeypatch):
    calls = []

    def fake_measure(mods, *_args):
        calls.append(list(mods))
        # round 1: d0 t0 d1 t1; round 2: d0 t0 d1 t1
        return [5.0, 3.0, 2.0, 9.0, 4.0, 3.5, 1.0, 8.0]

    monkeypatch.setattr(tuning, "_measure", fake_measure)
    result = tuning._duel(["d0", "d1"], ["t0", "t1"], None, None, None)
    assert calls == [["d0", "t0", "d1", "t1", "d0", "t0", "d1", "t1"]]
    assert result == [(4.0, 3.0), (1.0, 8.0)]
    assert tuning._duel([], [], None, None, None) == []


def test_a_tuned_schedule_must_win_by_the_margin():
    assert tuning.choose_schedule(default_s=1.0, tuned_s=0.9, min_speedup=1.03) == "tuned"
    assert tuning.choose_schedule(default_s=1.0, tuned_s=0.99, min_speedup=1.03) == "default"  # within noise
    assert tuning.choose_schedule(default_s=1.0, tuned_s=1.2, min_speedup=1.0) == "default"
    assert tuning.choose_schedule(default_s=1.0, tuned_s=tuning.FAILED_RUN_S, min_speedup=1.03) == "default"
    with pytest.raises(TvmcompressError, match="min_speedup"):
        TuneConfig(trials=1, min_speedup=0.9)
