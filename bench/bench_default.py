"""Default-build latency benchmark: tvmcompress cpu_pipeline (no tuning) against ONNX Runtime fp32.

Builds each model from bench/models.py, compiles it with cpu_pipeline for the host CPU, and times ORT
and TVM interleaved in one process (ORT with 2 intra-op threads, TVM with 2 worker threads), so that
noise from other processes hits both alike. Prints a markdown table.

    python bench/bench_default.py [--models resnet18,bert_encoder] [--runs 30] [--with-tvm-default]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TVM_NUM_THREADS", "2")

import numpy as np
import onnx
import onnxruntime as ort
import tvm
from tvm import relax
import tvm.relax.frontend.onnx

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import models as bench_models  # noqa: E402

from tvmcompress.schedules.cpu_pipeline import cpu_pipeline, host_target  # noqa: E402

THREADS = 2


def _import(model: onnx.ModelProto) -> tvm.IRModule:
    return relax.frontend.onnx.from_onnx(model, keep_params_in_input=False)


def _compile(model: onnx.ModelProto, target: tvm.target.Target, pipeline: str):
    start = time.perf_counter()
    mod = _import(model)
    if pipeline == "ours":
        ex = tvm.compile(mod, target, relax_pipeline=cpu_pipeline(target))
    else:
        ex = tvm.compile(mod, target)
    return ex, time.perf_counter() - start


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def bench_model(name: str, runs: int, warmup: int, with_tvm_default: bool) -> dict:
    model = bench_models.BUILDERS[name]()
    target = host_target(num_cores=THREADS)
    feed_info = model.graph.input[0]
    shape = [d.dim_value for d in feed_info.type.tensor_type.shape.dim]
    x = np.random.default_rng(0).standard_normal(shape).astype("float32")

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = THREADS
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    feed = {feed_info.name: x}
    ref = sess.run(None, feed)[0]

    runners = {"ort": lambda: sess.run(None, feed)}
    compile_s = {}
    outputs = {}
    pipelines = ["ours"] + (["tvm_default"] if with_tvm_default else [])
    dev = tvm.cpu()
    for pipeline in pipelines:
        ex, compile_s[pipeline] = _compile(model, target, "ours" if pipeline == "ours" else "default")
        with tempfile.TemporaryDirectory() as tmp:  # export and reload, as an artifact would be used
            lib_path = pathlib.Path(tmp) / "model.so"
            ex.export_library(str(lib_path))
            vm = relax.VirtualMachine(tvm.runtime.load_module(str(lib_path)), dev)
        data = tvm.runtime.tensor(x, dev)
        fn = vm["main"]
        outputs[pipeline] = fn(data).numpy()
        runners[pipeline] = lambda fn=fn, data=data: fn(data)

    times = {key: [] for key in runners}
    for _ in range(warmup):
        for run in runners.values():
            run()
    for _ in range(runs):  # interleaved: one run of each per round
        for key, run in runners.items():
            start = time.perf_counter()
            run()
            times[key].append((time.perf_counter() - start) * 1e3)
    row = {"model": name, "compile_s": compile_s}
    for key, values in times.items():
        row[key] = (statistics.median(values), _percentile(values, 90))
    row["max_abs_err"] = {k: float(np.max(np.abs(v - ref))) for k, v in outputs.items()}
    return row


def format_table(rows: list[dict], with_tvm_default: bool) -> str:
    head = "| model | ORT fp32 ms (p50 / p90) | ours ms (p50 / p90) | ours / ORT | compile s |"
    sep = "|---|---|---|---|---|"
    if with_tvm_default:
        head += " TVM default ms (p50) | TVM default compile s |"
        sep += "---|---|"
    lines = [head, sep]
    for r in rows:
        o, t = r["ort"], r["ours"]
        line = (f"| {r['model']} | {o[0]:.2f} / {o[1]:.2f} | {t[0]:.2f} / {t[1]:.2f} | {t[0] / o[0]:.2f}x "
                f"| {r['compile_s']['ours']:.1f} |")
        if with_tvm_default:
            line += f" {r['tvm_default'][0]:.1f} | {r['compile_s']['tvm_default']:.1f} |"
        lines.append(line)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(bench_models.BUILDERS))
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--with-tvm-default", action="store_true", help="also build with tvm.compile's default pipeline (slow to run)")
    args = parser.parse_args()
    rows = []
    for name in args.models.split(","):
        row = bench_model(name, args.runs, args.warmup, args.with_tvm_default)
        print(f"# {name}: max |ours - ORT| = {row['max_abs_err']}", flush=True)
        rows.append(row)
    print(format_table(rows, args.with_tvm_default))


if __name__ == "__main__":
    main()
