"""report.json and report.html: what was built, how big it is, how accurate and (when tuned) how fast.

report.json is the machine-readable record; report.html renders the same data for a person. Both are written from
one dict, so they never disagree. The page itself is drawn by report_html.py.
"""

from __future__ import annotations

from typing import Any

from .artifact import write_json
from .report_html import render_html

REPORT_SCHEMA_VERSION = 1


def build_report(manifest: dict[str, Any], model_stats: dict[str, Any]) -> dict[str, Any]:
    report = {
        "schema_version": REPORT_SCHEMA_VERSION,
        "target": {"preset": manifest["target"]["preset"], "arch": manifest["target"]["arch"]},
        "model": model_stats,
        "sizes": manifest["sizes"],
        "memory": manifest.get("memory"),  # static memory plan (tvmcompress/memory_plan.py); None: dynamic shapes
        "passes": manifest["passes"],
        "verification": manifest["verification"],
        "build_seconds": manifest["build_seconds"],
        "model_name": manifest.get("model_name"),
        "versions": manifest.get("versions"),
    }
    # For the charts (report_html.py); each only when the build recorded it.
    if manifest.get("memory_timeline") is not None:  # memory_timeline.py
        report["memory_timeline"] = manifest["memory_timeline"]
    if manifest.get("tuning") is not None:  # per-kernel default/tuned times (schedules/tuning.py)
        report["tuning"] = manifest["tuning"]
    if manifest.get("distillation") is not None:
        report["distillation"] = manifest["distillation"]
    if (manifest.get("quantization") or {}).get("config") is not None:
        report["quantization"] = manifest["quantization"]["config"]
    if manifest.get("pruning") is not None:  # per layer kept/total, criterion, MACs before/after (passes/prune.py)
        report["pruning"] = manifest["pruning"]
    # Which block-sparse layers run BSR kernels, with the measured times (passes/sparse_decision.py).
    if manifest.get("sparse_layers") is not None:
        report["sparse_layers"] = manifest["sparse_layers"]
    if manifest.get("clustering") is not None:  # --cluster-bits: per layer values and zeros (passes/cluster.py)
        report["clustering"] = manifest["clustering"]
    # int8 with --eval-data: per-layer sensitivity and the --accuracy-budget outcome (passes/quant_analysis.py).
    quantization = manifest.get("quantization") or {}
    accuracy = {key: quantization[key] for key in ("eval", "analysis", "accuracy_budget") if key in quantization}
    if accuracy:
        report["quantization_accuracy"] = accuracy
    return report


def write_report(json_path: str, html_path: str, manifest: dict[str, Any], model_stats: dict[str, Any]) -> None:
    report = build_report(manifest, model_stats)
    write_json(json_path, report)
    with open(html_path, "w", encoding="utf-8") as f:
        f.write(render_html(report))
