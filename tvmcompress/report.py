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
    return {
        "schema_version": REPORT_SCHEMA_VERSION,
        "target": {"preset": manifest["target"]["preset"], "arch": manifest["target"]["arch"]},
        "model": model_stats,
        "sizes": manifest["sizes"],
        "passes": manifest["passes"],
        "verification": manifest["verification"],
        "build_seconds": manifest["build_seconds"],
    }


def _table(rows: list[tuple[str, Any]]) -> str:
    cells = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f"<table>{cells}</table>"


def render_html(report: dict[str, Any]) -> str:
    model = report["model"]
    sections = [
        ("Target", _table([("preset", report["target"]["preset"]), ("arch", report["target"]["arch"])])),
        ("Sizes (bytes)", _table(sorted(report["sizes"].items()))),
        ("Inputs", _table([(i["name"], f"{i['dtype']} {i['shape']}") for i in model["inputs"]])),
        ("Outputs", _table([(o["name"], f"{o['dtype']} {o['shape']}") for o in model["outputs"]])),
        ("Operators", _table(sorted(model["op_histogram"].items()))),
        ("MACs per layer type", _table(sorted(model["macs"]["by_layer_type"].items()))),
        ("Passes", _table([(p["name"], p["options"]) for p in report["passes"]])),
    ]
    body = "".join(f"<h2>{html.escape(title)}</h2>{content}" for title, content in sections)
    style = "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}th,td{border:1px solid #ccc;padding:4px 8px;text-align:left}"
    return f"<!doctype html><html><head><meta charset='utf-8'><title>tvmcompress report</title><style>{style}</style></head><body><h1>tvmcompress report</h1>{body}</body></html>\n"


def write_report(json_path: str, html_path: str, manifest: dict[str, Any], model_stats: dict[str, Any]) -> None:
    report = build_report(manifest, model_stats)
    write_json(json_path, report)
    with open(html_path, "w", encoding="utf-8") as f:
        f.write(render_html(report))
