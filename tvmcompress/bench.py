"""`tvmcompress bench`: time our artifacts against ONNX Runtime on the same inputs, interleaved, in one process.

Why interleaved: on a shared machine, load drifts over seconds; timing contender A for 30 runs and then B for 30
runs lets that drift decide the comparison. Contenders take short turns (5 timed runs, after 2 untimed ones that
let the previous contender's spinning worker threads go idle), so every contender runs under the same conditions,
and the median (with p90 to show the spread) ignores the outliers. Only ratios within one run are meaningful.
"""

from __future__ import annotations

import logging
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

    def __post_init__(self):
        if self.runs < MIN_RUNS:
            raise TvmcompressError(f"--runs must be at least {MIN_RUNS} for a stable median, got {self.runs}")
        if self.warmup < 1 or self.threads < 1 or self.turn < 1 or self.settle < 0:
            raise TvmcompressError("--warmup, --threads and the turn length must be at least 1")


@dataclass(frozen=True)
class BenchRow:
    name: str
    median_ms: float
    p90_ms: float
    ratio_to_ort: float  # median / ORT fp32 median: below 1 is faster than ONNX Runtime


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
    """Interleaved timing of ORT fp32 (and int8) and each artifact ({label: directory}) on one set of random inputs."""
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

    times: dict[str, list[float]] = {name: [] for name in contenders}
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
            for _ in range(runs):
                start = time.perf_counter()
                fn()
                times[name].append((time.perf_counter() - start) * 1e3)
        done += runs
        log.info("timed %d/%d runs of each contender", done, config.runs)

    reference = statistics.median(times["onnxruntime fp32"])
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


def rows_to_json(rows: list[BenchRow], config: BenchConfig) -> dict:
    from .targets import cpu_features

    features = cpu_features.detect()
    return {
        "config": asdict(config),
        "machine": {"mcpu": features.mcpu, "cores": features.cores, "isa": features.isa_summary()},
        "rows": [asdict(r) for r in rows],
    }


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
