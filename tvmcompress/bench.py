"""`tvmcompress bench`: time our artifacts against ONNX Runtime on the same inputs, interleaved, in one process.

Why interleaved: on a shared machine, load drifts over seconds; timing contender A for 30 runs and then B for 30
runs lets that drift decide the comparison. Contenders take short turns (5 timed runs, after 2 untimed ones that
let the previous contender's spinning worker threads go idle), so every contender runs under the same conditions,
and the median (with p90 to show the spread) ignores the outliers. Only ratios within one run are meaningful.

Why a measurement can still lie, and what `measure` does about it: a burst of load that hits some turns and not
others moves one contender's median, not the others' (seen: the first of several artifacts at 270-557x ORT's
median in 4 of 6 runs on a loaded machine). So every measurement is checked: each contender's p90 must stay
within `max_spread` of its median, and each contender's ratio to ONNX Runtime fp32, taken per round (a third of
the turns), must not move by more than `max_ratio_drift` across rounds. An unstable measurement is repeated (up
to `max_attempts`); if none is stable, the steadiest is returned with warnings that say why. The machine's load
average before and after is part of every result.
"""

from __future__ import annotations

import logging
import os
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import onnx

from .errors import TvmcompressError

log = logging.getLogger(__name__)

MIN_RUNS = 30


@dataclass(frozen=True)
class BenchConfig:
    runs: int = 50  # timed runs per contender, after warm-up
    warmup: int = 5
    threads: int = 2  # ORT intra-op threads; our artifacts use their target's num-cores
    ort_int8: bool = False
    # Contenders take turns of `turn` timed runs, each turn after `settle` untimed ones. Both runtimes' workers
    # spin-wait after a call (ONNX Runtime's intra-op pool, TVM's pool), so the first runs after a switch share
    # the cores with the previous contender's spinning threads. Measured on ResNet-18, runs in a turn: ORT
    # 74, 52, 22, 23, 24 ms; ours 46-61, 34, 31, 31, 30 ms. Alternating single runs timed one side at 3x.
    turn: int = 5
    settle: int = 2
    # Stability checks (see the module docstring). On an idle 2-core host p90/median stays under 1.3 and the
    # per-round ratios within 1.15x of each other on the benchmark models; the limits leave room for ordinary
    # noise and still catch the swings that misreport a contender by 1.5x or more.
    max_spread: float = 2.0
    max_ratio_drift: float = 1.5
    rounds: int = 3
    max_attempts: int = 3

    def __post_init__(self):
        if self.runs < MIN_RUNS:
            raise TvmcompressError(f"--runs must be at least {MIN_RUNS} for a stable median, got {self.runs}")
        if self.warmup < 1 or self.threads < 1 or self.turn < 1 or self.settle < 0:
            raise TvmcompressError("--warmup, --threads and the turn length must be at least 1")
        if self.max_spread <= 1 or self.max_ratio_drift <= 1 or self.rounds < 2 or self.max_attempts < 1:
            raise TvmcompressError("the stability limits must exceed 1, with at least 2 rounds and 1 attempt")


@dataclass(frozen=True)
class BenchRow:
    name: str
    median_ms: float
    p90_ms: float
    ratio_to_ort: float  # median / ORT fp32 median: below 1 is faster than ONNX Runtime


@dataclass(frozen=True)
class BenchResult:
    """Rows of the steadiest attempt, whether it passed the stability checks, and the machine's load."""

    rows: list[BenchRow]
    stable: bool
    attempts: int
    warnings: tuple[str, ...]
    load_before: tuple[float, float, float]  # os.getloadavg(): 1, 5 and 15 minutes
    load_after: tuple[float, float, float]
    cores: int

    def load_line(self) -> str:
        return (f"machine load (1-min average): {self.load_before[0]:.2f} before, {self.load_after[0]:.2f} after, "
                f"on {self.cores} logical cores")


def _ort_session(model: onnx.ModelProto, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _ort_int8_model(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> onnx.ModelProto:
    """ORT's own static int8 (QDQ, per-channel weights), calibrated on the benchmark inputs."""
    import os
    import tempfile

    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class _Reader(CalibrationDataReader):
        def __init__(self):
            self._items = iter([feeds])

        def get_next(self):
            return next(self._items, None)

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "fp32.onnx"), os.path.join(tmp, "int8.onnx")
        onnx.save(model, src)
        quantize_static(
            src, dst, _Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        )
        return onnx.load(dst)


def _random_feeds(inputs) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    feeds = {}
    for spec in inputs:
        if spec.dtype.startswith("float"):
            feeds[spec.name] = rng.standard_normal(spec.shape).astype(spec.dtype)
        else:
            feeds[spec.name] = rng.integers(0, 2, size=spec.shape).astype(spec.dtype)
    return feeds


def benchmark(
    model_path: str, artifacts: dict[str, str], config: BenchConfig, input_shapes: dict | None = None
) -> list[BenchRow]:
    """Interleaved timing of ORT fp32 (and int8) and each artifact ({label: directory}) on one set of random inputs.

    The rows of `measure`; its stability warnings go to the log."""
    result = measure(model_path, artifacts, config, input_shapes)
    for warning in result.warnings:
        log.warning("%s", warning)
    return result.rows


def measure(
    model_path: str, artifacts: dict[str, str], config: BenchConfig, input_shapes: dict | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> BenchResult:
    """Like `benchmark`, with the stability verdict and the machine's load (see the module docstring)."""
    from . import frontend
    from .api import load

    model = frontend.canonicalize(frontend.load_model(model_path), input_shapes or {})
    inputs, _ = frontend.model_io(model)
    feeds = _random_feeds(inputs)

    contenders: dict[str, Callable[[], object]] = {}
    ort_fp32 = _ort_session(model, config.threads)
    contenders["onnxruntime fp32"] = lambda: ort_fp32.run(None, feeds)
    if config.ort_int8:
        log.info("quantizing with onnxruntime.quantization.quantize_static (QDQ, per-channel)")
        ort_int8 = _ort_session(_ort_int8_model(model, feeds), config.threads)
        contenders["onnxruntime int8"] = lambda: ort_int8.run(None, feeds)
    for label, directory in artifacts.items():
        artifact = load(directory)
        if artifact.target["runner"] != "native":
            raise TvmcompressError(
                f"artifact '{directory}' is built for {artifact.target['preset']}, which does not run natively here: "
                "bench compares on this machine, so compile it for --target host"
            )
        names = [spec.name for spec in artifact.inputs]
        if sorted(names) != sorted(feeds):
            raise TvmcompressError(f"artifact '{directory}' has inputs {names}, the model has {sorted(feeds)}: bench one model at a time")
        session = artifact.session()
        # Weights kept outside the library (--separate-weights) are arguments after the inputs.
        tensors = session.to_device([*(feeds[n] for n in names), *artifact.weight_arrays()])
        contenders[f"tvmcompress {label}"] = lambda s=session, t=tensors: s.call_device(t)

    return time_contenders(contenders, config, clock)


def time_contenders(
    contenders: dict[str, Callable[[], object]], config: BenchConfig, clock: Callable[[], float] = time.perf_counter
) -> BenchResult:
    """Time the contenders (the first is the reference) in turns, check stability, repeat while unstable."""
    load_before = os.getloadavg()
    attempts = []
    for attempt in range(1, config.max_attempts + 1):
        turns = _time_turns(contenders, config, clock)
        reasons = check_stability(turns, config)
        attempts.append((len(reasons), -attempt, turns, reasons))
        if not reasons:
            break
        log.info("attempt %d of %d unstable (%s)%s", attempt, config.max_attempts, "; ".join(reasons),
                 ", repeating" if attempt < config.max_attempts else "")
    _, _, turns, reasons = min(attempts, key=lambda a: (a[0], a[1]))  # fewest problems, then the latest
    load_after = os.getloadavg()
    cores = os.cpu_count() or 1
    warnings = []
    if reasons:
        warnings = [f"unstable measurement: {reason}" for reason in reasons]
        warnings.append(
            f"the timings above are not trustworthy after {len(attempts)} attempts; the load average went from "
            f"{load_before[0]:.2f} to {load_after[0]:.2f} on {cores} logical cores: rerun on an idle machine")
    return BenchResult(_rows(turns), not reasons, len(attempts), tuple(warnings), load_before, load_after, cores)


def _time_turns(contenders, config: BenchConfig, clock) -> dict[str, list[list[float]]]:
    """Milliseconds of each timed run, grouped by turn, for each contender."""
    turns: dict[str, list[list[float]]] = {name: [] for name in contenders}
    log.info("warming up %d contenders", len(contenders))
    for _ in range(config.warmup):
        for fn in contenders.values():
            fn()
    done = 0
    while done < config.runs:
        runs = min(config.turn, config.runs - done)
        for name, fn in contenders.items():
            for _ in range(config.settle):
                fn()
            samples = []
            for _ in range(runs):
                start = clock()
                fn()
                samples.append((clock() - start) * 1e3)
            turns[name].append(samples)
        done += runs
        log.info("timed %d/%d runs of each contender", done, config.runs)
    return turns


def check_stability(turns: dict[str, list[list[float]]], config: BenchConfig) -> list[str]:
    """Why these timings cannot be trusted (empty if they can); the first contender is the reference."""
    reasons = []
    for name, per_turn in turns.items():
        samples = [t for turn in per_turn for t in turn]
        median = statistics.median(samples)
        p90 = float(np.percentile(samples, 90))
        if median > 0 and p90 > config.max_spread * median:
            reasons.append(f"{name}: p90 {p90:.3f} ms is {p90 / median:.1f}x its median {median:.3f} ms")
    reference = next(iter(turns))
    count = len(turns[reference])
    rounds = min(config.rounds, count)
    if rounds >= 2:
        bounds = [round(k * count / rounds) for k in range(rounds + 1)]

        def round_median(name, k):
            return statistics.median([t for turn in turns[name][bounds[k]:bounds[k + 1]] for t in turn])

        for name in turns:
            if name == reference:
                continue
            ratios = [round_median(name, k) / round_median(reference, k) for k in range(rounds)
                      if round_median(reference, k) > 0]
            if ratios and min(ratios) > 0 and max(ratios) / min(ratios) > config.max_ratio_drift:
                reasons.append(f"{name}: its ratio to {reference} moved between {min(ratios):.2f}x and "
                               f"{max(ratios):.2f}x across {rounds} rounds")
    return reasons


def _rows(turns: dict[str, list[list[float]]]) -> list[BenchRow]:
    times = {name: [t for turn in per_turn for t in turn] for name, per_turn in turns.items()}
    reference = statistics.median(next(iter(times.values())))
    rows = []
    for name, samples in times.items():
        median = statistics.median(samples)
        p90 = float(np.percentile(samples, 90))
        rows.append(BenchRow(name, round(median, 4), round(p90, 4), round(median / reference, 3)))
    return rows


def format_table(rows: list[BenchRow]) -> str:
    lines = [f"{'contender':<44} {'median ms':>10} {'p90 ms':>10} {'vs ORT fp32':>12}"]
    lines += [f"{r.name:<44} {r.median_ms:>10.3f} {r.p90_ms:>10.3f} {r.ratio_to_ort:>11.2f}x" for r in rows]
    return "\n".join(lines)


def rows_to_json(rows: list[BenchRow], config: BenchConfig, result: BenchResult | None = None) -> dict:
    from .targets import cpu_features

    features = cpu_features.detect()
    data = {
        "config": asdict(config),
        "machine": {"mcpu": features.mcpu, "cores": features.cores, "isa": features.isa_summary()},
        "rows": [asdict(r) for r in rows],
    }
    if result is not None:
        data["stable"] = result.stable
        data["attempts"] = result.attempts
        data["warnings"] = list(result.warnings)
        data["load"] = {"before": list(result.load_before), "after": list(result.load_after),
                        "logical_cores": result.cores}
    return data


def describe_method(config: BenchConfig) -> str:
    """One paragraph for BENCHMARKS.md: threads on both sides and how runs are taken."""
    import os

    pool = os.environ.get("TVM_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS") or "TVM's default"
    return (
        f"ONNX Runtime with {config.threads} intra-op threads; our artifacts on TVM's thread pool of {pool} workers "
        f"(TVM_NUM_THREADS, set by `import tvmcompress` to the physical cores), each using its target's core count. "
        f"Contenders take turns of {config.turn} timed runs, each turn after {config.settle} untimed runs that let "
        f"the previous contender's spinning worker threads go idle; {config.runs} timed runs each after "
        f"{config.warmup} warm-up runs, in one process."
    )
