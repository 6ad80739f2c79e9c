"""`tvmcompress bench`: time our artifacts against ONNX Runtime on the same inputs, interleaved, in one process.

Why interleaved: on a shared machine, load drifts over seconds; timing contender A for 30 runs and then B for 30
runs lets that drift decide the comparison. Round-robin runs put every contender under the same conditions, and
the median (with p90 to show the spread) ignores the outliers. Only ratios within one run are meaningful.
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

    def __post_init__(self):
        if self.runs < MIN_RUNS:
            raise TvmcompressError(f"--runs must be at least {MIN_RUNS} for a stable median, got {self.runs}")
        if self.warmup < 1 or self.threads < 1:
            raise TvmcompressError("--warmup and --threads must be at least 1")


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
    for i in range(config.runs):
        for name, fn in contenders.items():
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1e3)
        if (i + 1) % 10 == 0:
            log.info("timed %d/%d rounds", i + 1, config.runs)

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
