"""`tvmcompress report OUT [--open] [--compare OUT2 ... [--time] [--html FILE]]`: regenerate an artifact's report.json and
report.html from its manifest (a newer tvmcompress draws a better page from the same record), or put several
artifacts side by side (size, memory, latency, accuracy) in the terminal and, with --html, as a page.

Only files this command owns are written: the artifact's own report.json/report.html (each replaced atomically),
or the --html file the user named. A comparison never rewrites the artifacts it reads.
"""

from __future__ import annotations

import html
import json
import os
import tempfile
import webbrowser
from typing import Any

from .artifact import Artifact
from .charts import format_bytes, format_count
from .errors import TvmcompressError
from .report import build_report
from .report_html import _CSS, _kernel_latency, render_html

REPORT_JSON, REPORT_HTML = "report.json", "report.html"


def _write_atomically(path: str, text: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".report-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_report(directory: str) -> dict[str, Any]:
    """The report dict of the artifact at `directory`, rebuilt from its manifest. The source model's statistics
    (not in the manifest) come from the artifact's report.json. Raises TvmcompressError for anything that is not
    an artifact of this tvmcompress."""
    if not os.path.isdir(directory):
        raise TvmcompressError(f"'{directory}' is not a directory: pass the -o directory of `tvmcompress compile`")
    artifact = Artifact(directory)
    path = os.path.join(artifact.directory, REPORT_JSON)
    try:
        with open(path, encoding="utf-8") as f:
            model_stats = json.load(f)["model"]
    except (OSError, ValueError, KeyError, TypeError):
        raise TvmcompressError(f"artifact '{directory}' has no readable {REPORT_JSON}: recompile it") from None
    return build_report(artifact.manifest, model_stats)


def regenerate(directory: str) -> str:
    """Rewrite `directory`'s report.json and report.html; returns the page's path."""
    report = load_report(directory)
    page = os.path.join(os.path.abspath(directory), REPORT_HTML)
    _write_atomically(os.path.join(os.path.abspath(directory), REPORT_JSON),
                      json.dumps(report, indent=2, sort_keys=True) + "\n")
    _write_atomically(page, render_html(report))
    return page


def measure_latency(directory: str, runs: int = 30) -> float | None:
    """Median seconds of one call of the artifact on zero inputs, or None when its target does not run natively
    here (a qemu time says nothing about the device). One warm-up call first."""
    import statistics
    import time

    import numpy as np

    artifact = Artifact(directory)
    if artifact.target.get("runner") != "native":
        return None
    feeds = {spec.name: np.zeros(spec.shape, dtype=spec.dtype) for spec in artifact.inputs}
    artifact.run(feeds)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        artifact.run(feeds)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def comparison_rows(reports: list[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    """(row name, one cell per artifact) for the side-by-side table."""

    def cell(report: dict[str, Any], key: str) -> str:
        sizes = report["sizes"]
        breakdown = sizes.get("weights_breakdown") or {}
        accuracy = report.get("quantization_accuracy", {})
        if key == "model":
            return report.get("model_name") or "?"
        if key == "target":
            return report["target"]["preset"]
        if key == "build":
            return report["verification"].get("compressed") or "float"
        if key == "weights":
            stored = breakdown.get("after_entropy_coding") or sizes["weights_bytes"]
            return format_bytes(stored)
        if key == "library":
            return format_bytes(sizes["library_bytes"])
        if key == "flash":
            return format_bytes(sizes["flash_bytes"]) if sizes.get("flash_bytes") is not None else "-"
        if key == "ram":
            peak = (report.get("memory") or {}).get("peak_activation_bytes")
            return format_bytes(peak) if peak is not None else "-"
        if key == "macs":
            pruning = report.get("pruning")
            return format_count(pruning["macs_after"] if pruning else report["model"]["macs"]["total"])
        if key == "latency":
            if "measured_latency_s" in report:  # --time
                measured = report["measured_latency_s"]
                return f"{measured * 1e3:.3g} ms (median, zeros)" if measured is not None else "does not run here"
            latency = _kernel_latency(report)
            return f"{latency[1] * 1e3:.3g} ms (tuned kernels)" if latency else "not measured"
        if key == "accuracy":
            evaluation = accuracy.get("accuracy_budget") or accuracy.get("eval")
            if evaluation is None:
                return "-"
            final = evaluation.get("final_metric", evaluation.get("int8_metric"))
            return f"{evaluation['metric'].replace('_', ' ')} {evaluation['fp32_metric']:.4g} -> {final:.4g}"
        if key == "sqnr":
            outputs = report["verification"].get("outputs") or []
            values = [o["sqnr_db"] for o in outputs if o.get("sqnr_db") is not None]
            return f"{min(values):.1f} dB" if values else ("exact" if outputs else "not verified")
        raise KeyError(key)

    names = [("model", "model"), ("target", "target"), ("build", "build"), ("weights", "weights stored"),
             ("library", "library"), ("flash", "on flash"), ("ram", "peak RAM"), ("macs", "MACs"),
             ("latency", "latency"), ("accuracy", "accuracy"), ("sqnr", "SQNR vs ONNX Runtime")]
    return [(label, [cell(r, key) for r in reports]) for key, label in names]


def format_comparison(directories: list[str], rows: list[tuple[str, list[str]]]) -> str:
    header = ["", *[os.path.basename(os.path.normpath(d)) or d for d in directories]]
    table = [header, *[[label, *cells] for label, cells in rows]]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table)


def comparison_html(directories: list[str], rows: list[tuple[str, list[str]]]) -> str:
    head = "".join(f"<th>{html.escape(os.path.basename(os.path.normpath(d)))}</th>" for d in directories)
    body = "".join(f"<tr><th>{html.escape(label)}</th>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells)
                   + "</tr>" for label, cells in rows)
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'><title>tvmcompress comparison</title>"
            f"<style>{_CSS}.wide{{overflow-x:auto}}</style></head><body><h1>Side by side</h1>"
            f"<div class='wide'><table><tr><th></th>{head}</tr>{body}</table></div></body></html>\n")


def run(directory: str, compare: list[str], html_path: str | None, open_page: bool, time_runs: bool = False) -> int:
    """The `report` command: returns the exit code; raises TvmcompressError on bad input."""
    if time_runs and not compare:
        raise TvmcompressError("--time is for --compare: `tvmcompress bench` times one artifact against ONNX Runtime")
    if not compare:
        if html_path is not None:
            raise TvmcompressError("--html is for --compare; the report of one artifact is its report.html")
        page = regenerate(directory)
        print(f"wrote {page}")
    else:
        directories = [directory, *compare]
        reports = [load_report(d) for d in directories]
        if time_runs:  # one artifact after the other, each warmed up; a rough side-by-side, not `bench`
            for report, d in zip(reports, directories):
                report["measured_latency_s"] = measure_latency(d)
        rows = comparison_rows(reports)
        print(format_comparison(directories, rows))
        if html_path is None and not open_page:
            return 0
        if html_path is not None and os.path.isdir(html_path):
            raise TvmcompressError(f"--html {html_path} is a directory: name the .html file to write")
        if html_path is not None and not os.path.isdir(os.path.dirname(os.path.abspath(html_path))):
            raise TvmcompressError(f"--html {html_path}: its directory does not exist")
        if html_path is None:
            fd, html_path = tempfile.mkstemp(prefix="tvmcompress-compare-", suffix=".html")
            os.close(fd)
        _write_atomically(html_path, comparison_html(directories, rows))
        page = html_path
        print(f"wrote {page}")
    if open_page:
        webbrowser.open("file://" + os.path.abspath(page))
    return 0
