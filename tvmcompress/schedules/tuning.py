"""MetaSchedule tuning with the XGBoost cost model, a reusable database, and a per-task fallback to our defaults.

Contract with the build: tasks are extracted from the *same* lowered, fused, unscheduled module that the build then
schedules (`cpu_pipeline.cpu_lowering_passes`). Tuning TVM's generic pipeline and building with another is how
tuned schedules get lost (measured: tasks tuned to 65 ms in total, the built model still ran in 1.3 s), because the
built PrimFuncs no longer match the database's workloads structurally.

The database directory holds MetaSchedule's JSON database plus `decisions.json`: for every task, the latency of
our default schedule next to the best tuned one, measured with the same builder and runner. The build applies a
tuned record only where it beat the default, so tuning never makes a task slower. A build whose tasks all have
records and decisions measures nothing and is deterministic.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import tvm
import tvm_ffi
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms

from tvmcompress.config import TuneConfig

log = logging.getLogger(__name__)

DECISIONS_FILE = "decisions.json"
WORKLOAD_FILE = "database_workload.json"
RECORD_FILE = "database_tuning_record.json"
FAILED_RUN_S = 1e9  # what MetaSchedule records for a candidate that failed to build or run
_UNLIMITED_TRIALS = 1 << 30  # a minutes-only budget: the deadline ends tuning, not a trial count


@dataclass
class TaskDecision:
    task: str
    workload: str  # structural hash of the task's PrimFunc
    target: str
    default_s: float
    tuned_s: float
    use: str  # "tuned" or "default"
    note: str = ""  # why a task was not tuned

    def to_json(self) -> dict:
        return dict(self.__dict__)


@dataclass
class TuningSummary:
    tasks: int
    measured_tasks: int  # 0 when the database already covered everything
    trials: int
    seconds: float
    decisions: list[TaskDecision] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "tasks": self.tasks,
            "measured_tasks": self.measured_tasks,
            "trials": self.trials,
            "seconds": round(self.seconds, 3),
            "decisions": [d.to_json() for d in self.decisions],
        }


def _target_key(target: tvm.target.Target) -> str:
    return str(target)


def _workload_key(mod: tvm.IRModule) -> str:
    return f"{tvm_ffi.structural_hash(mod) & 0xFFFFFFFFFFFFFFFF:016x}"


def open_database(directory: str) -> ms.database.JSONDatabase:
    os.makedirs(directory, exist_ok=True)
    return ms.database.JSONDatabase(
        os.path.join(directory, WORKLOAD_FILE), os.path.join(directory, RECORD_FILE), allow_missing=True
    )


def _load_decisions(directory: str) -> dict[tuple[str, str], TaskDecision]:
    path = os.path.join(directory, DECISIONS_FILE)
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        entries = json.load(f)
    return {(e["workload"], e["target"]): TaskDecision(**e) for e in entries}


def _save_decisions(directory: str, decisions: dict[tuple[str, str], TaskDecision]) -> None:
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, DECISIONS_FILE)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump([d.to_json() for _, d in sorted(decisions.items())], f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def build_candidate(mod: tvm.IRModule, target: tvm.target.Target, _params) -> tvm.runtime.Module:
    """MetaSchedule's default_build without its `import tvm.s_tir.tensor_intrin`.

    That import parses ~500 TVMScript intrinsics in every fresh builder worker: measured at 336 s on this 2-core
    machine under load, so each worker hit the builder timeout before building a single candidate, was killed,
    restarted and imported again. fp32 candidates use no tensor intrinsics.
    """
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    # The builder calls this through the FFI, which would turn the (callable) Executable into a Function:
    # hand back the runtime module itself.
    return tvm.compile(mod, target=target).mod


def cross_export(compiler: str) -> Callable[[tvm.runtime.Module], str]:
    """An f_export that links candidates with a cross compiler, for RPC devices of another architecture."""

    def export(mod: tvm.runtime.Module) -> str:
        import tempfile

        from tvm.support import cc

        path = os.path.join(tempfile.mkdtemp(prefix="tvmcompress-candidate-"), "candidate.so")
        mod.export_library(path, fcompile=cc.cross_compiler(compiler))
        return path

    return export


def _builder(config: TuneConfig, export: Callable | None) -> ms.builder.Builder:
    return ms.builder.LocalBuilder(
        max_workers=config.builder_workers or max(1, os.cpu_count() or 1),
        timeout_sec=config.builder_timeout_s,
        f_build=build_candidate,
        f_export=export,
    )


def _runner(config: TuneConfig) -> ms.runner.Runner:
    evaluator = ms.runner.EvaluatorConfig(number=3, repeat=3, min_repeat_ms=20, enable_cpu_cache_flush=False)
    if config.rpc is None:
        return ms.runner.LocalRunner(evaluator_config=evaluator)
    rpc = ms.runner.RPCConfig(
        tracker_host=config.rpc.tracker_host,
        tracker_port=config.rpc.tracker_port,
        tracker_key=config.rpc.key,
        session_timeout_sec=config.rpc.session_timeout_s,
    )
    return ms.runner.RPCRunner(rpc_config=rpc, evaluator_config=evaluator, max_workers=1)


def _measure(
    mods: list[tvm.IRModule], target: tvm.target.Target, builder: ms.builder.Builder, runner: ms.runner.Runner
) -> list[float]:
    """Mean seconds of each scheduled PrimFunc module, built and run like MetaSchedule's candidates."""
    built = builder.build([ms.builder.BuilderInput(mod, target) for mod in mods])
    inputs, index = [], []
    for i, (mod, result) in enumerate(zip(mods, built)):
        if result.error_msg:
            log.warning("default schedule of a task failed to build: %s", result.error_msg.splitlines()[-1])
            continue
        args = ms.arg_info.ArgInfo.from_prim_func(mod["main"])
        device = "cpu" if target.kind.name == "llvm" else target.kind.name
        inputs.append(ms.runner.RunnerInput(result.artifact_path, device, args))
        index.append(i)
    seconds = [FAILED_RUN_S] * len(mods)
    for i, future in zip(index, runner.run(inputs)):
        result = future.result()
        if not result.error_msg and result.run_secs:
            seconds[i] = float(sum(float(s) for s in result.run_secs) / len(result.run_secs))
    return seconds


class _ProgressCallback:
    """One progress line: trials, tasks measured, the sum of the best latencies, time left.

    On a terminal the line is rewritten in place after each measured batch; otherwise each batch is a DEBUG log
    record and one INFO line sums up the search at the end."""

    def __init__(self, total_trials: int | None, deadline: float | None = None, stream=None):
        self.total = total_trials
        self.deadline = deadline
        self.trials = 0
        self.best: dict[int, float] = {}
        self.stream = stream if stream is not None else sys.stderr
        self.live = bool(getattr(self.stream, "isatty", lambda: False)()) and log.isEnabledFor(logging.INFO)
        self.bar = None  # progress.Progress while tune() runs (open_bar/finish)
        self.tasks = 0

    def open_bar(self, tasks: int) -> None:
        """From here on the bar (tvmcompress/progress.py: tqdm on a terminal, throttled log lines otherwise)
        shows tasks, trials and the best so far, instead of the plain line."""
        from ..progress import progress

        self.tasks = tasks
        self.bar = progress("tuning", self.total, unit="trial")

    def make(self):
        outer = self

        @derived_object
        class _Callback(ms.measure_callback.PyMeasureCallback):
            def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
                outer.record(task_id, runner_results)

        return _Callback()

    def record(self, task_id: int, runner_results) -> None:
        self.trials += len(runner_results)
        for result in runner_results:
            if result.run_secs and not result.error_msg:
                mean = sum(float(s) for s in result.run_secs) / len(result.run_secs)
                self.best[task_id] = min(self.best.get(task_id, FAILED_RUN_S), mean)
        line = self.line()
        if self.bar is not None:
            self.bar.update(len(runner_results), tasks=f"{len(self.best)}/{self.tasks}",
                            best=f"{sum(self.best.values()) * 1e3:.3f} ms")
            log.debug("%s", line)
        elif self.live:
            self.stream.write("\r" + line.ljust(100))
            self.stream.flush()
        else:
            log.debug("%s", line)

    def line(self) -> str:
        total = f"/{self.total}" if self.total else ""
        left = ""
        if self.deadline is not None:
            left = f", {max(0.0, self.deadline - time.perf_counter()) / 60:.1f} min left"
        return (f"tuning: {self.trials}{total} trials, {len(self.best)} tasks measured, "
                f"sum of best task latencies {sum(self.best.values()) * 1e3:.3f} ms{left}")

    def finish(self) -> None:
        if self.bar is not None:  # the bar's last state is the summary
            self.bar.close()
            self.bar = None
            log.debug("%s", self.line())
            return
        if self.live:
            self.stream.write("\n")
            self.stream.flush()
        log.info("%s", self.line())


class TimeSharePolicy:
    """Which task gets the next batch: the one that holds the most of the model's time now.

    A task's cost is its weight (calls per model run) times its best latency so far, starting from our default
    schedule's. A task whose last batches did not improve it by 1% has its cost discounted by `decay` per such
    batch, so the budget moves on once a task stops paying. Unlike MetaSchedule's gradient scheduler, there is no
    warm-up round that gives every task a batch first: on 2 cores a batch takes about a minute, and a task whose
    default is already good may never deserve one. Plain Python, so it is testable without MetaSchedule.
    """

    def __init__(self, costs: list[float], deadline: float | None, decay: float = 0.5):
        self.cost = list(costs)
        self.stale = [0] * len(costs)
        self.deadline = deadline
        self.decay = decay

    def record(self, task: int, weighted_best_s: float) -> None:
        if weighted_best_s < 0.99 * self.cost[task]:
            self.cost[task], self.stale[task] = weighted_best_s, 0
        else:
            self.stale[task] += 1

    def pick(self, alive: list[int], now: float) -> int:
        """The next task, or -1 when the deadline has passed or no task is left."""
        if not alive or (self.deadline is not None and now > self.deadline):
            return -1
        return max(alive, key=lambda i: (self.cost[i] * self.decay ** self.stale[i], -i))


def _time_share_scheduler(policy: TimeSharePolicy, weights: list[float]):
    """A MetaSchedule task scheduler driven by `policy`. Each batch is joined before the next is chosen, so the
    choice sees its results (the runner works while the next batch's candidates are searched and built, in the
    stock schedulers; on 2 cores those compete for the same cores anyway)."""

    @derived_object
    class _TimeShareScheduler(ms.task_scheduler.PyTaskScheduler):
        def __init__(self):
            super().__init__()
            self.running: int | None = None

        def next_task_id(self) -> int:
            records = self._outer().tasks_
            if self.running is not None and not records[self.running].is_terminated:
                results = self.join_running_task(self.running)
                best = min((_mean(r.run_secs) for r in results if not r.error_msg), default=FAILED_RUN_S)
                policy.record(self.running, best * weights[self.running])
            alive = [i for i, r in enumerate(records) if not r.is_terminated]
            self.running = policy.pick(alive, time.perf_counter())
            if self.running == -1:
                if alive:
                    log.info("tuning: the time budget is spent; stopping")
                self.running = None
                return -1
            return self.running

    return _TimeShareScheduler()


def tune(
    task_mod: tvm.IRModule,
    target: tvm.target.Target,
    config: TuneConfig,
    work_dir: str,
    default_schedule: Callable[[tvm.IRModule], tvm.IRModule],
    export: Callable | None = None,
) -> TuningSummary:
    """Tune the tasks of `task_mod` not yet covered by the database, then record default-vs-tuned decisions.

    `default_schedule` applies our default rules to a one-PrimFunc module (its "main"); `export` links a built
    candidate for a foreign target (None: the host's compiler).
    """
    start = time.perf_counter()
    db_dir = config.database_dir or work_dir
    database = open_database(db_dir)
    decisions = _load_decisions(db_dir)
    target_key = _target_key(target)

    tasks = ms.relax_integration.extract_tasks(task_mod, target)
    tasks = [t for t in tasks if not t.dispatched[0].attrs or not t.dispatched[0].attrs.get("tirx.is_scheduled", False)]
    pending = [
        t for t in tasks
        if not _covered(t.dispatched[0], decisions.get((_workload_key(t.dispatched[0]), target_key)), database)
    ]
    log.info("tuning: %d tasks, %d not in the database %s", len(tasks), len(pending), db_dir)
    if config.measures and tasks:
        # A budget is spent even on tasks the database covers: a second compile adds trials to their records
        # instead of stopping at the first compile's. The search starts from the database's best records
        # (MetaSchedule's evolutionary search seeds its population with them), and the duel below compares
        # the default with the best record of all compiles. Without a budget (--tuning-db alone) nothing is
        # measured and the rebuild stays deterministic.
        pending = list(tasks)
    if not pending or not config.measures:
        if pending:
            log.info("tuning: %d tasks have no records; they keep the default schedules", len(pending))
        return TuningSummary(len(tasks), 0, 0, time.perf_counter() - start, [decisions[k] for k in sorted(decisions)])

    pending_keys = [_workload_key(t.dispatched[0]) for t in pending]
    # dlight's ApplyDefaultSchedule assigns into the module it is given: schedule a fresh module, or the task
    # module itself becomes scheduled and MetaSchedule searches (and keys records by) the wrong function.
    default_mods = [default_schedule(tvm.IRModule(dict(t.dispatched[0].functions_items()))) for t in pending]
    builder, runner = _builder(config, export), _runner(config)
    # Defaults first: they are the fallback, and they say where the model's time goes, so the budget is spent
    # on the tasks that hold most of it.
    log.info("tuning: measuring the default schedules of %d tasks", len(pending))
    default_secs = _measure(default_mods, target, builder, runner)
    costs = [s * t.weight for t, s in zip(pending, default_secs)]  # seconds per model run
    selected = _worth_tuning(costs, config.min_task_share)
    for i, (task, key, default_s) in enumerate(zip(pending, pending_keys, default_secs)):
        if i not in selected:
            note = "not tuned: a small share of the model's time under the default schedules"
            decisions[(key, target_key)] = TaskDecision(
                task.task_name, key, target_key, default_s, FAILED_RUN_S, "default", note
            )
    chosen = [pending[i] for i in sorted(selected)]
    log.info(
        "tuning: %d of %d tasks hold %.0f%% of the default time; tuning those",
        len(chosen), len(pending), 100 * _share(selected, costs),
    )
    deadline = start + config.minutes * 60 if config.minutes else None
    progress = _ProgressCallback(config.trials, deadline)
    if chosen:
        # The evolutionary search (mutation, feature extraction, cost-model prediction) runs on every core: it is
        # a large share of each batch's wall time on 2 cores.
        from ..progress import route_metaschedule_logging

        # Before: the console handler MetaSchedule is about to create takes the logger's level (its "Logging
        # directory" line); after: that handler is replaced by ours. Its tables and XGBoost lines: -v only.
        route_metaschedule_logging()
        contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
            chosen, os.path.join(work_dir, "logs"), num_threads=os.cpu_count() or 1, seed=config.seed
        )
        route_metaschedule_logging()
        # A minutes budget without a trial budget sets no trial limit: the scheduler stops at the deadline.
        policy = TimeSharePolicy([costs[i] for i in sorted(selected)], deadline)
        progress.open_bar(len(chosen))
        ms.tune.tune_tasks(
            tasks=contexts,
            task_weights=weights,
            work_dir=work_dir,
            max_trials_global=config.trials if config.trials else _UNLIMITED_TRIALS,
            max_trials_per_task=None,
            num_trials_per_iter=config.trials_per_round,
            builder=builder,
            runner=runner,
            database=database,
            cost_model=ms.cost_model.XGBModel(
                extractor=ms.feature_extractor.PerStoreFeature(), adaptive_training=True,
                num_tuning_cores=os.cpu_count() or 1,
            ),
            measure_callbacks=[*ms.measure_callback.MeasureCallback.create("default"), progress.make()],
            task_scheduler=_time_share_scheduler(policy, [float(w) for w in weights]),
        )
        progress.finish()

    best = _best_records(db_dir)
    duel = [i for i in sorted(selected) if pending_keys[i] in best]
    log.info("tuning: timing the default and the best tuned schedule of %d tasks side by side", len(duel))
    timed = _duel([default_mods[i] for i in duel], [_scheduled(best[pending_keys[i]]) for i in duel],
                  target, builder, runner, rounds=3)
    final = dict(zip(duel, timed))
    for i in sorted(selected):
        task, workload_key = pending[i], pending_keys[i]
        # A task without a record keeps the default (timed before tuning).
        default_s, tuned_s = final.get(i, (default_secs[i], FAILED_RUN_S))
        use = choose_schedule(default_s, tuned_s, config.min_speedup)
        key = (workload_key, target_key)
        decisions[key] = TaskDecision(task.task_name, key[0], target_key, default_s, tuned_s, use)
        tuned_ms = f"{tuned_s * 1e3:.4f} ms" if tuned_s < FAILED_RUN_S else "no record"
        log.info("task %s: default %.4f ms, tuned %s -> %s", task.task_name, default_s * 1e3, tuned_ms, use)
    _save_decisions(db_dir, decisions)
    return TuningSummary(
        len(tasks), len(pending), progress.trials, time.perf_counter() - start, [decisions[k] for k in sorted(decisions)]
    )


def _scheduled(record: ms.database.TuningRecord) -> tvm.IRModule:
    sch = tvm.s_tir.Schedule(record.workload.mod)
    record.trace.apply_to_schedule(sch, remove_postproc=False)
    return sch.mod


def _duel(defaults: list[tvm.IRModule], tuned: list[tvm.IRModule], target, builder, runner,
          rounds: int = 2) -> list[tuple[float, float]]:
    """Per task, the fastest of `rounds` timings of its default and of its tuned schedule, taken alternately.

    The decision must not compare numbers taken minutes apart: on a shared machine the load changes between the
    default measurement (before tuning) and the records (during it). Measured: defaults timed under another
    process's load read 8-10 ms, against 2.5-3.0 ms on the idle machine, which made slower records win."""
    if not defaults:
        return []
    mods = [m for _ in range(rounds) for pair in zip(defaults, tuned) for m in pair]
    secs = _measure(mods, target, builder, runner)
    n = len(defaults)
    return [
        (min(secs[r * 2 * n + 2 * i] for r in range(rounds)), min(secs[r * 2 * n + 2 * i + 1] for r in range(rounds)))
        for i in range(n)
    ]


def choose_schedule(default_s: float, tuned_s: float, min_speedup: float) -> str:
    """'tuned' when the tuned schedule measured at least `min_speedup` times faster than the default, else 'default'."""
    return "tuned" if tuned_s * min_speedup <= default_s else "default"


def _covered(func, decision: TaskDecision | None, database) -> bool:
    """A task needs no measuring when it has a decision, and the record that decision uses (if tuned)."""
    return decision is not None and (decision.use == "default" or database.has_workload(func))


def _share(indices, costs: list[float]) -> float:
    total = sum(c for c in costs if c < FAILED_RUN_S)
    return sum(costs[i] for i in indices) / total if total else 1.0


def _worth_tuning(costs: list[float], min_share: float) -> set[int]:
    """Indices of the costliest tasks that together hold 95% of the total, minus any under `min_share` of it.

    A default that failed to build or run (FAILED_RUN_S) is always tuned: tuning may be its only schedule."""
    failed = {i for i, c in enumerate(costs) if c >= FAILED_RUN_S}
    total = sum(c for i, c in enumerate(costs) if i not in failed)
    chosen, covered = set(failed), 0.0
    for i in sorted(set(range(len(costs))) - failed, key=lambda i: -costs[i]):
        if total and (covered >= 0.95 * total or costs[i] < min_share * total):
            break
        chosen.add(i)
        covered += costs[i]
    return chosen


def _mean(run_secs) -> float:
    secs = [float(s) for s in run_secs or []]
    return sum(secs) / len(secs) if secs else FAILED_RUN_S


def _best_records(database_dir: str) -> dict[str, ms.database.TuningRecord]:
    """The fastest record of each workload in the database, by our workload key."""
    best: dict[str, ms.database.TuningRecord] = {}
    for record in open_database(database_dir).get_all_tuning_records():
        key = _workload_key(record.workload.mod)
        if key not in best or _mean(record.run_secs) < _mean(best[key].run_secs):
            best[key] = record
    return best


def winning_database(database_dir: str, target: tvm.target.Target) -> ms.database.MemoryDatabase:
    """The records to apply: for each task whose tuned schedule beat the default, its fastest record only."""
    decisions = _load_decisions(database_dir)
    target_key = _target_key(target)
    winners = ms.database.MemoryDatabase()
    for key, record in sorted(_best_records(database_dir).items()):
        decision = decisions.get((key, target_key))
        if decision is None or decision.use != "tuned":
            continue
        workload = winners.commit_workload(record.workload.mod)
        winners.commit_tuning_record(
            ms.database.TuningRecord(record.trace, workload, record.run_secs, record.target, record.args_info)
        )
    return winners


def save_records(database: ms.database.Database, directory: str, decisions_from: str) -> None:
    """Copy every record of `database` into the JSON database at `directory`, with the decisions of
    `decisions_from`, so that `directory` alone rebuilds the same schedules (as --tuning-db)."""
    _save_decisions(directory, _load_decisions(decisions_from))
    target = open_database(directory)
    for record in database.get_all_tuning_records():
        workload = target.commit_workload(record.workload.mod)
        target.commit_tuning_record(
            ms.database.TuningRecord(record.trace, workload, record.run_secs, record.target, record.args_info)
        )


def apply_database(database: ms.database.Database) -> tvm.transform.Pass:
    """MetaScheduleApplyDatabase reads the ambient `Database.current()`: scope it to this one pass."""

    @tvm.transform.module_pass(opt_level=0, name="tvmcompress.ApplyTunedSchedules")
    def _apply(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        with database:
            return tvm.relax.transform.MetaScheduleApplyDatabase(enable_warning=False)(mod)

    return _apply
