"""Regenerate the `tuned` section of BENCHMARKS.md: each benchmark model tuned with MetaSchedule for a wall-clock
budget, rebuilt from the saved database, and timed against ONNX Runtime and our default build.

    python bench/bench_tuned.py [--models resnet18,mobilenet_v2,bert_encoder] [--minutes 30] [--runs 30]
                                [--database-root DIR]

Per model:
1. the default build (no tuning), as in `run_benchmarks.py`;
2. `--tune-minutes M` into a database under DIR/<model> (kept between runs: a rerun with the same DIR extends it);
3. a rebuild from that database alone (`--tuning-db`, no trials): its wall time, that it measured nothing, and that
   its outputs equal the tuned build's bit for bit;
4. ORT fp32 (2 threads), the default build and the tuned build, interleaved, median and p90 of `--runs`.

Also printed: the tuning summary (tasks, trials, how many tasks kept our default schedule because tuning did not
beat it). This machine is shared: compare ratios within one table, not absolute times across tables.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import pathlib
import platform
import sys
import tempfile
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import models as bench_models  # noqa: E402
from markdown_sections import replace_section  # noqa: E402

import tvmcompress  # noqa: E402
from tvmcompress.bench import BenchConfig, benchmark, describe_method  # noqa: E402
from tvmcompress.config import TuneConfig  # noqa: E402
from tvmcompress.targets import cpu_features  # noqa: E402


def _compile(model: str, out: str, tune: TuneConfig | None) -> tuple[tvmcompress.Artifact, float]:
    start = time.perf_counter()
    options = tvmcompress.CompileOptions.create(tune=tune) if tune else None
    artifact = tvmcompress.compile(model, "host", output=out, options=options)
    return artifact, time.perf_counter() - start


def _feeds(artifact: tvmcompress.Artifact) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {spec.name: rng.standard_normal(spec.shape).astype(spec.dtype) for spec in artifact.inputs}


def bench_model(name: str, path: str, work: str, db_root: str, minutes: float, config: BenchConfig) -> str:
    default, default_s = _compile(path, os.path.join(work, f"{name}-default"), None)
    db = os.path.join(db_root, name)
    print(f"{name}: default build in {default_s:.1f} s; tuning for {minutes} min into {db}", flush=True)
    tuned, tuned_s = _compile(path, os.path.join(work, f"{name}-tuned"),
                              TuneConfig(minutes=minutes, database_dir=db))
    summary = tuned.manifest["tuning"]
    rebuilt, rebuild_s = _compile(path, os.path.join(work, f"{name}-rebuilt"), TuneConfig(database_dir=db))
    re_summary = rebuilt.manifest["tuning"]
    feeds = _feeds(tuned)
    a, b = tuned.run(feeds), rebuilt.run(feeds)
    identical = all(np.array_equal(a[k], b[k]) for k in a)
    kept_default = sum(1 for d in summary["decisions"] if d["use"] == "default")
    rows = benchmark(path, {"default build": default.directory, "tuned build": rebuilt.directory}, config)
    lines = [
        f"### {name}", "",
        f"- Default build compiled in {default_s:.1f} s.",
        f"- Tuned build: {summary['tasks']} tasks, {summary['trials']} trials in {summary['seconds'] / 60:.1f} min of "
        f"tuning ({tuned_s / 60:.1f} min with the build); {summary['tasks'] - kept_default} tasks use a tuned "
        f"schedule, {kept_default} kept our default because tuning did not beat it.",
        f"- Rebuilt from the saved database in {rebuild_s:.1f} s, {re_summary['measured_tasks']} tasks measured, "
        f"outputs {'bit-identical to' if identical else 'DIFFERENT from'} the tuned build.",
        "",
        "| contender | median ms | p90 ms | vs ORT fp32 |", "|---|---|---|---|",
    ]
    lines += [f"| {r.name} | {r.median_ms:.2f} | {r.p90_ms:.2f} | {r.ratio_to_ort:.2f}x |" for r in rows]
    # Tuned/default against the minutes spent so far: a rerun with the same --database-root extends the
    # database (its trials add to the earlier ones), so the history shows whether more minutes keep paying.
    by_name = {r.name: r for r in rows}
    ratio = by_name["tvmcompress tuned build"].median_ms / by_name["tvmcompress default build"].median_ms
    history_path = os.path.join(db, "history.json")
    history = json.load(open(history_path, encoding="utf-8")) if os.path.exists(history_path) else []
    spent = (history[-1]["cumulative_minutes"] if history else 0.0) + summary["seconds"] / 60
    history.append({"date": datetime.date.today().isoformat(), "minutes": summary["seconds"] / 60,
                    "cumulative_minutes": spent, "trials": summary["trials"], "tuned_over_default": ratio})
    with open(history_path, "w", encoding="utf-8") as f:
        json.dump(history, f, indent=1)
    lines += ["", f"Tuned / default median: {ratio:.2f}x after {spent:.1f} min of tuning in all "
              f"({'tuning paid' if ratio < 1 else 'no schedule beat the defaults'}).", "",
              "| tuning minutes (cumulative) | trials this run | tuned / default |", "|---|---|---|"]
    lines += [f"| {h['cumulative_minutes']:.1f} | {h['trials']} | {h['tuned_over_default']:.2f}x |" for h in history]
    with open(os.path.join(db, "bench_summary.json"), "w", encoding="utf-8") as f:
        json.dump({"tuning": summary, "rebuild_s": rebuild_s, "identical": identical,
                   "rows": [r.__dict__ for r in rows]}, f, indent=1, default=str)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(bench_models.BUILDERS))
    parser.add_argument("--minutes", type=float, default=30.0, help="tuning budget per model")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--database-root", default=None,
                        help="keep the tuning databases here (default: a temporary directory)")
    parser.add_argument("--output", default=str(HERE.parent / "BENCHMARKS.md"))
    args = parser.parse_args()
    # Tuning progress (trials, best latency so far, per-task default-vs-tuned decisions) on stderr.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("tvmcompress").setLevel(logging.INFO)

    features = cpu_features.detect()
    config = BenchConfig(runs=args.runs)
    sections = []
    with tempfile.TemporaryDirectory(prefix="tvmcompress-tuned-") as tmp:
        db_root = args.database_root or os.path.join(tmp, "databases")
        paths = bench_models.write_models(pathlib.Path(tmp))
        for name in args.models.split(","):
            sections.append(bench_model(name, str(paths[name]), tmp, db_root, args.minutes, config))
            print(sections[-1], flush=True)

    command = "python bench/bench_tuned.py " + " ".join(sys.argv[1:])
    text = f"""## Tuned builds against ONNX Runtime

Regenerated by `{command.strip()}` on {datetime.date.today().isoformat()}.

Machine: {platform.processor() or platform.machine()}, LLVM CPU `{features.mcpu}`, {features.cores} cores, ISA
{", ".join(features.isa_summary()) or "baseline"}. MetaSchedule with the XGBoost cost model, {args.minutes:g} min of
tuning per model; per task, the build uses the tuned schedule only where it measured faster than our default
schedule. {describe_method(config)} Compare ratios within one table.

{chr(10).join(chr(10) + s + chr(10) for s in sections)}
"""
    replace_section(args.output, "tuned", text)
    print(f"wrote section 'tuned' of {args.output}")


if __name__ == "__main__":
    main()
