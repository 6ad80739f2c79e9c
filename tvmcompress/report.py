"""report.json and report.html: what was built, how big it is, and (as later steps add them) how accurate and fast.

report.json is the machine-readable record; report.html renders the same data for a person. Both are written from
one dict, so they never disagree.
"""

from __future__ import annotations

import html
from typing import Any

from .artifact import write_json

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
    }
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


def _table(rows: list[tuple[str, Any]]) -> str:
    cells = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f"<table>{cells}</table>"


def render_html(report: dict[str, Any]) -> str:
    model = report["model"]
    sections = [
        ("Target", _table([("preset", report["target"]["preset"]), ("arch", report["target"]["arch"])])),
        ("Sizes (bytes)", _table(sorted(report["sizes"].items()))),
        ("Activation memory (bytes)", _table(sorted((report.get("memory") or {"peak_activation_bytes": "unknown"}).items()))),
        ("Inputs", _table([(i["name"], f"{i['dtype']} {i['shape']}") for i in model["inputs"]])),
        ("Outputs", _table([(o["name"], f"{o['dtype']} {o['shape']}") for o in model["outputs"]])),
        ("Operators", _table(sorted(model["op_histogram"].items()))),
        ("MACs per layer type", _table(sorted(model["macs"]["by_layer_type"].items()))),
        ("Passes", _table([(p["name"], p["options"]) for p in report["passes"]])),
    ]
    if "pruning" in report:
        pruning = report["pruning"]
        rows = [(l["layer"], f"{l['op']} kept {l['kept']}/{l['total']}, sparsity {l['sparsity']}, "
                 f"MACs {l['macs_before']} -> {l['macs_after']}") for l in pruning["layers"]]
        rows.append(("total MACs", f"{pruning['macs_before']} -> {pruning['macs_after']}"))
        sections.append((f"Pruning ({pruning['config']['spec']}, {pruning['config']['criterion']})", _table(rows)))
        budget = pruning.get("budget")  # --prune-budget (passes/prune_budget.py)
        if budget is not None:
            rows = [(g["name"], f"{g['step']} ratio {g['ratio']:g} (spec {g['spec_ratio']:g}); alone: "
                     + ", ".join(f"{s['ratio']:g} -> drop {s['metric_drop']}" for s in g["sensitivity"]))
                    for g in budget["groups"]]
            rows.insert(0, (budget["metric"], f"dense {budget['metric_dense']}, uniform {budget['metric_uniform']}, "
                            f"final {budget['metric_final']} (budget {budget['budget']:g} points)"))
            sections.append(("Pruning budget", _table(rows)))
    breakdown = report["sizes"].get("weights_breakdown")
    if breakdown:
        sections.append(("Weights by compression stage (bytes)", _table(list(breakdown.items()))))
    if report.get("sparse_layers"):
        rows = [(d["layer"], f"{'BSR kernel' if d['sparse'] else 'dense'}: {d['reason']} "
                 f"(weight {d['shape'][0]}x{d['shape'][1]}, block {d['block'][0]}x{d['block'][1]}, "
                 f"{100 * d['block_sparsity']:.0f}% zero blocks)") for d in report["sparse_layers"]]
        sections.append(("Sparse kernels", _table(rows)))
    accuracy = report.get("quantization_accuracy", {})
    if "eval" in accuracy:
        sections.append(("int8 accuracy on --eval-data", _table(sorted(accuracy["eval"].items()))))
    if "analysis" in accuracy:
        analysis = accuracy["analysis"]
        rows = [(f"{l['name']} ({l['binding']})", f"SQNR {l['sqnr_db']} dB; {analysis['metric']} with it alone in int8 "
                 f"{l['metric']} (drop {l['metric_drop']})") for l in analysis["layers"]]
        rows.insert(0, (analysis["metric"], f"fp32 {analysis['fp32_metric']}, int8 {analysis['int8_metric']}"))
        sections.append(("int8 sensitivity per layer", _table(rows)))
    if "accuracy_budget" in accuracy:
        sections.append(("Accuracy budget", _table(sorted(accuracy["accuracy_budget"].items()))))
    body = "".join(f"<h2>{html.escape(title)}</h2>{content}" for title, content in sections)
    style = "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}th,td{border:1px solid #ccc;padding:4px 8px;text-align:left}"
    return f"<!doctype html><html><head><meta charset='utf-8'><title>tvmcompress report</title><style>{style}</style></head><body><h1>tvmcompress report</h1>{body}</body></html>\n"


def write_report(json_path: str, html_path: str, manifest: dict[str, Any], model_stats: dict[str, Any]) -> None:
    report = build_report(manifest, model_stats)
    write_json(json_path, report)
    with open(html_path, "w", encoding="utf-8") as f:
        f.write(render_html(report))
