"""Regenerate the `dynamic-shapes` section of BENCHMARKS.md: one dynamic-shape artifact against the same model
built static for each shape (issue 21).

    nice -n 19 python bench/bench_dynamic.py [--models resnet18,crnn] [--runs 20]

- ResNet-18 (bench/models.py, 224x224) with batch N=1..8, timed at N = 1, 3, 8;
- the corpus CRNN recognizer (tests/corpus/architectures.py: conv stack, 2-layer bidirectional LSTM, CTC head),
  exported with a dynamic width, height 32, width W=32..1024, timed at W = 32, 256, 1024.

For each shape: the dynamic artifact's and the static build's median latency (interleaved runs on inputs already
on the device), their ratio (promise: <= 1.3), and both outputs' max abs difference against ONNX Runtime.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402

import models as bench_models  # noqa: E402
from markdown_sections import replace_section  # noqa: E402

import tvmcompress  # noqa: E402
from tvmcompress.config import CompileOptions  # noqa: E402


def resnet18_dynamic_batch() -> tuple[onnx.ModelProto, str, dict, list[tuple[int, ...]], str]:
    model = bench_models.build_resnet18()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "N"
    return model, "input", {"N": (1, 8)}, [(n, 3, 224, 224) for n in (1, 3, 8)], "N,3,224,224"


def crnn_dynamic_width() -> tuple[onnx.ModelProto, str, dict, list[tuple[int, ...]], str]:
    import io
    import warnings

    import torch
    from corpus.architectures import ARCHS, build_module

    module = build_module(ARCHS["crnn"])
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, torch.zeros(1, 3, 32, 64), buf, opset_version=17, dynamo=False,
                          input_names=["x"], dynamic_axes={"x": {3: "W"}})
    model = onnx.load_from_string(buf.getvalue())
    model.ir_version = min(model.ir_version, 8)
    return model, "x", {"W": (32, 1024)}, [(1, 3, 32, w) for w in (32, 256, 1024)], "1,3,32,W"


MODELS = {"resnet18": resnet18_dynamic_batch, "crnn": crnn_dynamic_width}


def _timed(fns: dict, runs: int) -> dict[str, float]:
    times = {name: [] for name in fns}
    for fn in fns.values():
        fn()
    for _ in range(runs):
        for name, fn in fns.items():  # interleaved: a load spike hits both contenders alike
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def bench_model(name: str, tmp: str, runs: int) -> list[dict]:
    model, input_name, ranges, shapes, dims_text = MODELS[name]()
    path = os.path.join(tmp, f"{name}.onnx")
    onnx.save(model, path)
    symbolic = tuple(d if not d.isdigit() else int(d) for d in dims_text.split(","))
    start = time.perf_counter()
    dynamic = tvmcompress.compile(path, "host", output=os.path.join(tmp, f"{name}-dynamic"),
                                  options=CompileOptions.create(input_shapes={input_name: symbolic}, dims=ranges))
    print(f"{name}: dynamic build {time.perf_counter() - start:.0f} s", flush=True)
    reference = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rows = []
    for shape in shapes:
        start = time.perf_counter()
        static = tvmcompress.compile(path, "host", output=os.path.join(tmp, f"{name}-{'x'.join(map(str, shape))}"),
                                     options=CompileOptions.create(input_shapes={input_name: shape}))
        print(f"{name} {list(shape)}: static build {time.perf_counter() - start:.0f} s", flush=True)
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        expected = reference.run(None, {input_name: x})[0]
        errors = {label: float(np.abs(a.run({input_name: x})[a.outputs[0].name] - expected).max())
                  for label, a in (("dynamic", dynamic), ("static", static))}
        fns = {}
        for label, artifact in (("dynamic", dynamic), ("static", static)):
            session = artifact.session()
            tensors = session.to_device([x])
            fns[label] = lambda s=session, t=tensors: s.call_device(t)
        medians = _timed(fns, runs)
        rows.append({"model": name, "shape": list(shape), **{f"{k}_ms": v for k, v in medians.items()},
                     "ratio": medians["dynamic"] / medians["static"], "max_abs_err": errors})
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet18,crnn")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    parser.add_argument("--rows-out", help="also save the measured rows as JSON here")
    parser.add_argument("--rows-in", help="write the section from rows saved by --rows-out (comma-separated files; "
                                          "one run per model in parallel, then one write) instead of measuring")
    args = parser.parse_args()
    rows = []
    if args.rows_in:
        for path in args.rows_in.split(","):
            rows.extend(json.loads(pathlib.Path(path).read_text()))
        args.models = ",".join(dict.fromkeys(r["model"] for r in rows))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            for name in args.models.split(","):
                rows.extend(bench_model(name, tmp, args.runs))
    if args.rows_out:
        pathlib.Path(args.rows_out).write_text(json.dumps(rows))
    lines = [
        "## Dynamic shapes: one artifact for a range of shapes vs a static build per shape",
        "",
        f"Command: `nice -n 19 python bench/bench_dynamic.py --models {args.models} --runs {args.runs}` "
        f"({datetime.date.today()}, {platform.machine()}, host target, "
        f"{os.cpu_count()} cores shared with other jobs: ratios are more reliable than absolute times). "
        "Median of interleaved runs on device-resident inputs; error = max |ours - ONNX Runtime|."
        + (" Each model was measured by its own process (`--models M --rows-out F`), run at the same time, and the "
           "section written from their rows (`--rows-in`)." if args.rows_in else ""),
        "",
        "| model | shape | dynamic ms | static ms | dynamic / static | err dynamic | err static |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['model']} | {r['shape']} | {r['dynamic_ms']:.2f} | {r['static_ms']:.2f} | "
                     f"{r['ratio']:.2f} | {r['max_abs_err']['dynamic']:.1e} | {r['max_abs_err']['static']:.1e} |")
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        replace_section(HERE.parent / "BENCHMARKS.md", "dynamic-shapes", body)


if __name__ == "__main__":
    main()
