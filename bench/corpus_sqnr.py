"""int8 SQNR of each corpus model against ONNX Runtime fp32, as a markdown table for BENCHMARKS.md.

    python bench/corpus_sqnr.py [--archs resnet18,bert] [--out table.md]
    python bench/corpus_sqnr.py --from-cache   # the values the last `pytest -m slow tests/corpus` recorded

Each model (tests/corpus/architectures.py: random weights, fixed seeds) is calibrated on 8 random inputs
(tests/corpus/check.py) and measured on another; SQNR = 10 log10(sum ref^2 / sum (ref - int8)^2) per output.
Next to it, ONNX Runtime's own static int8 (per-channel QDQ, same calibration): random weights are hard to
quantize, and that column says how hard. The floor: 15 dB, or within 3 dB of ORT's int8. A model that fails to compile is listed with the error's first line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, "tests", "corpus"), os.path.join(ROOT, "tests")]

import architectures  # noqa: E402
import check  # noqa: E402


def _row(name: str, opset: int, sqnr: dict | None, error: str = "", ort: list | None = None) -> str:
    family = architectures.ARCHS[name].family
    if sqnr is None:
        return f"| {name} | {opset} | {family} | - | - | failed: {error} |"
    ort = ort or [None] * len(sqnr)
    worst = min(sqnr.values())
    ort_worst = "-" if None in ort else f"{min(ort):.1f}"
    ok = all(v >= check.int8_floor(r) for v, r in zip(sqnr.values(), ort))
    per_output = ", ".join(f"{v:.1f}" for v in sqnr.values())
    return f"| {name} | {opset} | {family} | {worst:.1f} | {ort_worst} | {'ok' if ok else 'BELOW FLOOR'} " \
           f"(outputs: {per_output}) |"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", help="comma-separated corpus names (default: all)")
    parser.add_argument("--cache-dir", default=os.path.join(ROOT, ".pytest_cache", "d", "tvmcompress-corpus"))
    parser.add_argument("--from-cache", action="store_true", help="print what the slow corpus tests recorded")
    parser.add_argument("--out", help="also write the table to this file")
    args = parser.parse_args()
    names = args.archs.split(",") if args.archs else list(architectures.ARCHS)
    rows = ["| model | opset | family | tvmcompress int8 SQNR, worst output (dB) | ORT int8 (dB) | notes |",
            "|---|---|---|---|---|---|"]
    for name in names:
        for opset in architectures.ARCHS[name].opsets:
            if args.from_cache:
                path = os.path.join(ROOT, ".pytest_cache", "v", "tvmcompress-corpus", "sqnr", f"{name}-opset{opset}")
                if os.path.exists(path):
                    with open(path) as f:
                        rows.append(_row(name, opset, json.load(f)))
                continue
            with tempfile.TemporaryDirectory(prefix="corpus-sqnr-") as tmp:
                try:
                    model, _, expected, got = check.compile_mode(name, opset, "int8", args.cache_dir, tmp)
                    sqnr = {o.name: check.sqnr_db(w, h) for o, w, h in zip(model.graph.output, expected, got)}
                    rows.append(_row(name, opset, sqnr, ort=check.ort_int8_sqnr(name, opset, args.cache_dir, tmp)))
                except Exception as err:  # noqa: BLE001 - a failure is a row of the table, not the end of it
                    first = (str(err).strip().splitlines() or [type(err).__name__])[0][:120]
                    rows.append(_row(name, opset, None, f"{type(err).__name__}: {first}"))
            print(rows[-1], file=sys.stderr, flush=True)
    table = "\n".join(rows)
    print(table)
    if args.out:
        with open(args.out, "w") as f:
            f.write(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
