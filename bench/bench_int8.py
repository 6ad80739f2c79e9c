"""Regenerate the `int8` section of BENCHMARKS.md: our int8 build against our fp32 build and ONNX Runtime fp32/int8.

    python bench/bench_int8.py [--models resnet18,mobilenet_v2,bert_encoder] [--runs 30] [--repeats 3]

Per model (bench/models.py, random weights): our default fp32 build, our `--quantize int8` build (calibrated on
4 random inputs; on an AVX2 x86 host without VNNI the quantizer stores 7-bit weights for vpmaddubsw), ONNX
Runtime fp32, and ONNX Runtime int8 (`quantize_static`, QDQ, per-channel int8 weights, uint8 activations, as
`tvmcompress bench --ort-int8` makes it), timed interleaved in one process by `tvmcompress.bench.benchmark`.
Only speed is reported: with random weights the int8 outputs' agreement with fp32 says nothing about accuracy,
which the digits tests measure (tests/numerics/test_quantize_accuracy.py).

Each model's multiply-accumulates (tvmcompress.model_stats) over its median time give the rate our builds
reach, set against the instruction ceiling that bench_int8_peak.py measures on this machine (one core, times the
cores): "int8 at the ceiling" is how much faster than our fp32 build an int8 build would be if all of the
model's MACs ran at the int8 instructions' peak and nothing else took time, an upper bound. A second estimate
times every kernel of both builds alone (bench/profile_kernels.py): the int8 build with its integer dot-product
kernels (epilogues included) at the ceiling and its other kernels (depthwise, softmax, layer norm, attention
matmuls, ...) as timed, against the fp32 build's kernel time. Timed alone, a kernel's inputs sit warm in cache,
so int8's other advantage, 4x less activation traffic, counts less than end to end: an estimate, not a bound
(MobileNetV2's end-to-end ratio has exceeded it).
"""

from __future__ import annotations

import argparse
import datetime
import pathlib
import platform
import sys
import tempfile
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import models as bench_models  # noqa: E402
from bench_int8_peak import int8_ceiling, measure as measure_peaks  # noqa: E402
from markdown_sections import replace_section  # noqa: E402
from profile_kernels import profile as profile_kernels  # noqa: E402

import tvmcompress  # noqa: E402
from tvmcompress import frontend  # noqa: E402
from tvmcompress.bench import BenchConfig, benchmark, describe_method  # noqa: E402
from tvmcompress.model_stats import model_stats  # noqa: E402
from tvmcompress.config import CompileOptions  # noqa: E402
from tvmcompress.passes.quantize_config import QuantizeConfig  # noqa: E402
from tvmcompress.targets import cpu_features  # noqa: E402

CALIBRATION_SAMPLES = 4


def _write_calibration(model_path: pathlib.Path, out: pathlib.Path) -> pathlib.Path:
    """CALIBRATION_SAMPLES standard-normal inputs, stacked on axis 0 (the .npz contract of tvmcompress/data.py)."""
    inputs, _ = frontend.model_io(frontend.canonicalize(frontend.load_model(str(model_path)), {}))
    rng = np.random.default_rng(1)
    arrays = {
        spec.name: rng.standard_normal((CALIBRATION_SAMPLES * spec.shape[0], *spec.shape[1:])).astype(spec.dtype)
        for spec in inputs
    }
    np.savez(out, **arrays)
    return out


def _ceiling_text(peaks: dict, ceiling, cores: int) -> str:
    if ceiling is None:
        return "No int8 instruction ceiling was measured on this machine (bench_int8_peak.py)."
    fp32, int8, ratio = ceiling
    return (f"Instruction ceiling (`python bench/bench_int8_peak.py`, its own section): one core issues "
            f"{peaks[fp32]:.0f} GMAC/s with our fp32 kernels' instructions and {peaks[int8]:.0f} with our int8 "
            f"kernels' ({ratio:.2f}x); the peaks below are {cores} cores x those. A rate over 100% of the fp32 peak "
            "means fewer multiplications than MACs counted (Winograd).")


def _row(rows, name):
    return next(r for r in rows if r.name == name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(bench_models.BUILDERS))
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3,
                        help="benchmark each model this many times; the table shows the run with the median speedup")
    parser.add_argument("--output", default=str(HERE.parent / "BENCHMARKS.md"))
    args = parser.parse_args()

    features = cpu_features.detect()
    peaks = measure_peaks(features)
    ceiling = int8_ceiling(peaks)
    int8_peak = peaks[ceiling[1]] * features.cores if ceiling else None  # GMAC/s, all cores
    fp32_peak = peaks[ceiling[0]] * features.cores if ceiling else None
    config = BenchConfig(runs=args.runs, ort_int8=True)
    sections, summary = [], []
    with tempfile.TemporaryDirectory(prefix="tvmcompress-bench-int8-") as tmp:
        tmp_path = pathlib.Path(tmp)
        paths = bench_models.write_models(tmp_path)
        for name in args.models.split(","):
            calibration = _write_calibration(paths[name], tmp_path / f"{name}-calibration.npz")
            builds, compile_s = {}, {}
            for label, options in [
                ("fp32", None),
                ("int8", CompileOptions.create(quantize=QuantizeConfig(mode="int8"), calibration=str(calibration))),
            ]:
                out = tmp_path / f"{name}-{label}"
                start = time.perf_counter()
                artifact = tvmcompress.compile(str(paths[name]), "host", output=out, options=options)
                compile_s[label] = time.perf_counter() - start
                builds[label] = str(out)
                if label == "int8":
                    record = artifact.manifest["quantization"]
            # NOTE: the machine is shared and one run's medians can swing 1.5x; of several runs, the one with the
            # median int8/fp32 speedup is shown, and every run's speedup listed.
            runs = []
            for _ in range(args.repeats):
                found = benchmark(str(paths[name]), builds, config)
                runs.append((_row(found, "tvmcompress fp32").median_ms / _row(found, "tvmcompress int8").median_ms, found))
            runs.sort(key=lambda run: run[0])
            all_speedups = ", ".join(f"{speedup:.2f}x" for speedup, _ in runs)
            rows = runs[len(runs) // 2][1]
            macs = model_stats(frontend.canonicalize(frontend.load_model(str(paths[name])), {}))["macs"]["total"]
            ours_fp32, ours_int8 = _row(rows, "tvmcompress fp32"), _row(rows, "tvmcompress int8")
            ort_int8 = _row(rows, "onnxruntime int8")
            bits = record["config"]["weight_bits"]
            lines = [
                f"### {name}", "",
                f"Compiled in {compile_s['fp32']:.1f} s (fp32) and {compile_s['int8']:.1f} s (int8: "
                f"{record['integer_ops']} integer conv/matmul, {bits}-bit weights).", "",
                "| contender | median ms | p90 ms | vs ORT fp32 |", "|---|---|---|---|",
            ]
            lines += [f"| {r.name} | {r.median_ms:.2f} | {r.p90_ms:.2f} | {r.ratio_to_ort:.2f}x |" for r in rows]
            speedup = ours_fp32.median_ms / ours_int8.median_ms
            vs_ort_int8 = ort_int8.median_ms / ours_int8.median_ms
            rate = {label: macs / (row.median_ms * 1e6) for label, row in (("fp32", ours_fp32), ("int8", ours_int8))}
            kernels = {label: profile_kernels(path) for label, path in builds.items()}
            fp32_ms = sum(k.ms for k in kernels["fp32"])
            dot = [k for k in kernels["int8"] if k.int8_dot_macs]
            dot_ms, dot_macs = sum(k.ms for k in dot), sum(k.int8_dot_macs for k in dot)
            rest_ms = sum(k.ms for k in kernels["int8"]) - dot_ms
            bound = f"{fp32_ms / (rest_ms + dot_macs / (int8_peak * 1e6)):.2f}x" if int8_peak else "-"
            lines += ["", f"Our int8 is {speedup:.2f}x faster than our fp32 and {vs_ort_int8:.2f}x faster than "
                          f"ONNX Runtime int8 (above 1: faster). Speedup over fp32 in each of the {len(runs)} runs: "
                          f"{all_speedups}.", "",
                      f"Kernels timed alone (bench/profile_kernels.py): fp32 {fp32_ms:.2f} ms; int8 "
                      f"{dot_ms + rest_ms:.2f} ms = {dot_ms:.2f} ms in {len(dot)} integer dot-product kernels "
                      f"({dot_macs / 1e9:.2f} GMACs, {dot_macs / (dot_ms * 1e6):.0f} GMAC/s with their epilogues) "
                      f"+ {rest_ms:.2f} ms in the others. With those at the int8 ceiling and the others as they "
                      f"are, int8 would be {bound} faster than fp32 (kernels alone, warm caches: an estimate)."]
            at_peak = f"{ours_fp32.median_ms / (macs / (int8_peak * 1e6)):.2f}x" if int8_peak else "-"
            of_int8 = f" ({rate['int8'] / int8_peak:.0%})" if int8_peak else ""
            of_fp32 = f" ({rate['fp32'] / fp32_peak:.0%})" if fp32_peak else ""
            summary.append(f"| {name} | {speedup:.2f}x | {vs_ort_int8:.2f}x | {macs / 1e9:.2f} | {rate['fp32']:.0f}{of_fp32} | "
                           f"{rate['int8']:.0f}{of_int8} | {at_peak} | {bound} |")
            sections.append("\n".join(lines))
            print(sections[-1], flush=True)

    command = "python bench/bench_int8.py " + " ".join(sys.argv[1:])
    text = f"""## int8 builds against fp32 and ONNX Runtime int8

Regenerated by `{command.strip()}` on {datetime.date.today().isoformat()}.

Machine: {platform.processor() or platform.machine()}, LLVM CPU `{features.mcpu}`, {features.cores} cores, ISA
{", ".join(features.isa_summary()) or "baseline"}. Our builds: `tvmcompress.compile(model, "host")`, default
schedules (no tuning), int8 with `QuantizeConfig(mode="int8")` calibrated on {CALIBRATION_SAMPLES} random inputs.
ONNX Runtime fp32, and int8 from `quantize_static` (QDQ, per-channel, uint8 activations).
{describe_method(config)} The machine is shared, so compare ratios within one table; each model was benchmarked
{args.repeats} times and its table is the run with the median int8/fp32 speedup. Speed only: the models have random weights (accuracy of int8 is
measured on the trained digits CNN in tests/numerics/test_quantize_accuracy.py).

{_ceiling_text(peaks, ceiling, features.cores)}

| model | our int8 vs our fp32 (speedup) | our int8 vs ORT int8 (speedup) | GMACs | our fp32 GMAC/s (of fp32 peak) | our int8 GMAC/s (of int8 peak) | int8 at the ceiling vs our fp32 (all MACs) | same, other kernels as timed alone (estimate) |
|---|---|---|---|---|---|---|---|
{chr(10).join(summary)}
{chr(10).join(chr(10) + s + chr(10) for s in sections)}
"""
    replace_section(args.output, "int8", text)
    print(f"wrote section 'int8' of {args.output}")


if __name__ == "__main__":
    main()
