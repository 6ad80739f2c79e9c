"""Regenerate the `distillation` section of BENCHMARKS.md: sizes and speed of ternary / binary weights against
fp32, int8 and int4-weight builds, and the digits CNN's accuracy after `--distill`.

    nice -n 19 python bench/bench_distill.py [--runs 30] [--skip-accuracy]

Sizes: weights.bin bytes of `--separate-weights` builds (raw codec, before entropy coding). Speed: the artifacts
timed interleaved with ONNX Runtime fp32 (`tvmcompress.bench.benchmark`), default host builds, no tuning; a
1024-1024-1024-10 MLP at batch 1 (weight-bound, where fewer weight bytes could pay) and the digits CNN at batch 40.
Accuracy: tests/numerics/test_distill_accuracy.py's `distilled_accuracy` (1400 training images, 360 test images),
wall time of compression + distillation + quantization under the machine's load at the time (reported).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests" / "numerics"))

import numpy as np  # noqa: E402
import onnx  # noqa: E402
from markdown_sections import replace_section  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import tvmcompress  # noqa: E402
from tvmcompress.bench import BenchConfig, benchmark, describe_method  # noqa: E402
from tvmcompress.config import CompileOptions  # noqa: E402
from tvmcompress.passes.quantize_config import QuantizeConfig  # noqa: E402
from tvmcompress.targets import cpu_features  # noqa: E402

MODES = ("fp32", "int8", "int8-weight", "int4-weight", "ternary-weight", "binary-weight")


def _mlp(width: int = 1024) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    sizes = [width, width, width, 10]
    nodes, inits, prev = [], [], "input"
    for i in range(3):
        w = rng.normal(0, 1 / np.sqrt(sizes[i]), (sizes[i], sizes[i + 1])).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"W{i}"), numpy_helper.from_array(np.zeros(sizes[i + 1], np.float32), f"B{i}")]
        nodes += [helper.make_node("MatMul", [prev, f"W{i}"], [f"m{i}"]), helper.make_node("Add", [f"m{i}", f"B{i}"], [f"a{i}"])]
        prev = f"a{i}"
        if i < 2:
            nodes.append(helper.make_node("Relu", [prev], [f"r{i}"]))
            prev = f"r{i}"
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, width])],
                              [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model


def _builds(model_path: str, calibration: str, tmp: str, name: str, shapes: dict) -> dict[str, dict]:
    out = {}
    for mode in MODES:
        quantize = None if mode == "fp32" else QuantizeConfig(mode=mode)
        # verify=False: untrained ternary/binary weights fall below the SQNR floor; this measures size and speed.
        options = CompileOptions.create(input_shapes=shapes, quantize=quantize, separate_weights=True, verify=False,
                                        calibration=calibration if mode == "int8" else None)
        directory = os.path.join(tmp, f"{name}-{mode}")
        tvmcompress.compile(model_path, "host", output=directory, options=options)
        with open(os.path.join(directory, "manifest.json")) as f:
            sizes = json.load(f)["sizes"]
        out[mode] = {"dir": directory, "weights_file_bytes": sizes["weights_file_bytes"]}
    return out


def _size_speed_table(model_path: str, builds: dict, config: BenchConfig, shapes: dict) -> list[str]:
    rows = benchmark(model_path, {mode: b["dir"] for mode, b in builds.items()}, config, shapes)
    by_name = {r.name: r for r in rows}
    fp32_bytes = builds["fp32"]["weights_file_bytes"]
    fp32_ms = by_name["tvmcompress fp32"].median_ms
    table = ["| build | weights.bin bytes | vs fp32 | median ms | p90 ms | vs our fp32 |", "|---|---|---|---|---|---|"]
    for mode, build in builds.items():
        row = by_name[f"tvmcompress {mode}"]
        table.append(f"| {mode} | {build['weights_file_bytes']:,} | {fp32_bytes / build['weights_file_bytes']:.1f}x "
                     f"smaller | {row.median_ms:.3f} | {row.p90_ms:.3f} | {fp32_ms / row.median_ms:.2f}x |")
    ort = by_name["onnxruntime fp32"]
    table.append(f"| onnxruntime fp32 | - | - | {ort.median_ms:.3f} | {ort.p90_ms:.3f} | {fp32_ms / ort.median_ms:.2f}x |")
    return table


def _accuracy_table() -> list[str]:
    from digits_models import BATCH, EXAMPLES, with_batch
    from test_distill_accuracy import distilled_accuracy

    from tvmcompress.frontend import load_model
    from tvmcompress.passes.distill_config import DistillConfig

    teacher = with_batch(load_model(EXAMPLES / "digits_cnn.onnx"), BATCH)
    table = ["| compression | floor | compressed | + --distill | steps | seconds | load average |",
             "|---|---|---|---|---|---|---|"]
    for spec, mode, floor in (("channel:0.75", None, 98.6), (None, "int4-weight", 99.0),
                              (None, "ternary-weight", 98.0), (None, "binary-weight", 96.0)):
        load = os.getloadavg()[0]
        before, after, record, seconds = distilled_accuracy(teacher, spec, mode, DistillConfig(minutes=10))
        table.append(f"| {spec or mode} | {floor}% | {before:.2f}% | {after:.2f}% | {record['steps']} | "
                     f"{seconds:.0f} | {load:.1f} |")
        print(table[-1], flush=True)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--digits", action="store_true", help="also time the digits CNN builds (five more builds)")
    parser.add_argument("--output", default=str(HERE.parent / "BENCHMARKS.md"))
    args = parser.parse_args()
    features = cpu_features.detect()
    config = BenchConfig(runs=args.runs)
    from digits_models import BATCH, EXAMPLES, digits_split

    with tempfile.TemporaryDirectory(prefix="tvmcompress-bench-distill-") as tmp:
        mlp_path = os.path.join(tmp, "mlp1024.onnx")
        onnx.save(_mlp(), mlp_path)
        np.savez(os.path.join(tmp, "mlp_cal.npz"), input=np.random.default_rng(1).normal(0, 1, (32, 1024)).astype(np.float32))
        x_train = digits_split()[0]
        np.savez(os.path.join(tmp, "digits_cal.npz"), input=x_train[:200])
        start = time.perf_counter()
        mlp = _builds(mlp_path, os.path.join(tmp, "mlp_cal.npz"), tmp, "mlp", {})
        digits_shapes = {"input": [BATCH, 1, 8, 8]}
        digits = _builds(str(EXAMPLES / "digits_cnn.onnx"), os.path.join(tmp, "digits_cal.npz"), tmp, "digits",
                         digits_shapes) if args.digits else None
        build_s = time.perf_counter() - start
        mlp_table = _size_speed_table(mlp_path, mlp, config, {})
        digits_table = _size_speed_table(str(EXAMPLES / "digits_cnn.onnx"), digits, config, digits_shapes) \
            if digits is not None else ["(not run: --digits)"]
    accuracy = [] if args.skip_accuracy else _accuracy_table()
    command = "nice -n 19 python bench/bench_distill.py " + " ".join(sys.argv[1:])
    text = f"""## Distillation, ternary and binary weights

Regenerated by `{command.strip()}` on {datetime.date.today().isoformat()}.

Machine: {platform.processor() or platform.machine()}, LLVM CPU `{features.mcpu}`, {features.cores} cores, shared
(the load average is in the accuracy table). Default host builds with `--separate-weights` (no tuning; {build_s:.0f} s
for the builds). {describe_method(config)} Ternary and binary layers unpack their 2- and 1-bit codes inside the
kernel's inner loop (passes/quantize_weight_only.py) and multiply in float32; int8 is static int8 (calibrated).

1024-1024-1024-10 MLP, batch 1 (random weights; sizes and speed only):

{chr(10).join(mlp_table)}

Digits CNN, batch 40:

{chr(10).join(digits_table)}
""" + ("" if not accuracy else f"""
Digits CNN accuracy (fp32 99.17%), compressed and then `--distill` (DistillConfig defaults: 3 epochs of block-wise
reconstruction, 30 of output distillation, labels used), seconds = compression + distillation + quantization:

{chr(10).join(accuracy)}
""")
    print(text, flush=True)
    replace_section(args.output, "distillation", text)
    print(f"wrote section 'distillation' of {args.output}")


if __name__ == "__main__":
    main()
