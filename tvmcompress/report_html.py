"""report.html: one self-contained page (inline CSS and SVG, no script, no network) that a person reads first.

Order: a headline (what, for where, how much smaller, how accurate, verified or not), then the size waterfall,
the per-layer charts, the activation arena over time, and last the passes and the recipe to rebuild it.
Everything is drawn from the report dict (report.py), which is drawn from the manifest: a step that did not run is
shown as absent, never estimated. Text goes through `_human` so no Python repr ever reaches the page.
"""

from __future__ import annotations

import html
import math
import shlex
from typing import Any

from . import charts
from .charts import format_bytes, format_count

_CSS = """
:root{--fg:#202124;--muted:#5f6368;--line:#dadce0;--card:#f8f9fa;--good:#1e8e3e;--bad:#d93025}
*{box-sizing:border-box}
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);margin:0 auto;
  padding:16px;max-width:980px;overflow-wrap:anywhere}
h1{font-size:1.5em;margin:.2em 0}h2{font-size:1.15em;margin:1.6em 0 .4em;border-bottom:1px solid var(--line)}
.sub{color:var(--muted);margin:0 0 1em}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(170px,1fr));gap:10px}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:10px 12px}
.card .k{color:var(--muted);font-size:.8em;text-transform:uppercase;letter-spacing:.04em}
.card .v{font-size:1.25em;font-weight:600}.card .d{color:var(--muted);font-size:.85em}
.good{color:var(--good)}.bad{color:var(--bad)}
figure{margin:0 0 12px;min-width:0;max-width:760px}figcaption{font-weight:600;margin:.6em 0 .2em}
svg.chart{width:100%;height:auto;display:block}
svg .lbl{font-size:12px;fill:var(--fg)}svg .small{font-size:9px}svg .val{font-size:11px;fill:var(--muted)}
svg .absent{font-size:12px;fill:#9aa0a6;font-style:italic}svg .axis{stroke:#9aa0a6}
svg .break{stroke:#fff;stroke-width:3;fill:none}svg .removed{fill:none;stroke:#9aa0a6;stroke-dasharray:3 2}svg .peak{fill:#d93025;font-weight:600}
.note{color:var(--muted);font-size:.9em}
table{border-collapse:collapse;width:100%;font-size:.92em}
th,td{border-bottom:1px solid var(--line);padding:4px 6px;text-align:left;vertical-align:top}
th{font-weight:600;width:34%}
ol.passes li{margin:.3em 0}.opt{color:var(--muted);font-size:.9em}
pre{white-space:pre-wrap;background:var(--card);border:1px solid var(--line);border-radius:6px;padding:8px;
  font-size:.85em}
@media (max-width:600px){svg .lbl{font-size:17px}svg .val,svg .absent{font-size:15px}svg .small{font-size:12px}}
@media print{body{max-width:none;padding:0;font-size:11pt}figure,.card,table{break-inside:avoid}
  h2{break-after:avoid}}
"""


def _esc(text: object) -> str:
    return html.escape(str(text))


def _human(value: Any) -> str:
    """A config value as a person writes it: `mode int8, calibration method minmax`, never `{'mode': ...}`."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}" if math.isfinite(value) else "not finite"
    if isinstance(value, dict):
        if not value:
            return "none"
        # Sorted: the page drawn at build time (from the manifest in memory) and by `tvmcompress report` (from
        # manifest.json, written with sorted keys) must be the same.
        return "; ".join(f"{str(k).replace('_', ' ')} {_human(v)}" for k, v in sorted(value.items()))
    if isinstance(value, (list, tuple)):
        if not value:
            return "none"
        if all(isinstance(v, (int, float)) for v in value):
            return "x".join(_human(v) for v in value)
        return ", ".join(_human(v) for v in value)
    return str(value)


def _card(key: str, value: str, detail: str = "", cls: str = "") -> str:
    klass = f"v {cls}".strip()
    return (f'<div class="card"><div class="k">{_esc(key)}</div><div class="{klass}">{_esc(value)}</div>'
            f'<div class="d">{_esc(detail)}</div></div>')


def _figure(caption: str, svg: str, note: str = "") -> str:
    extra = f'<p class="note">{_esc(note)}</p>' if note else ""
    return f"<figure><figcaption>{_esc(caption)}</figcaption>{svg}{extra}</figure>"


def _absent(caption: str, why: str) -> str:
    return f'<figure class="absent-chart"><figcaption>{_esc(caption)}</figcaption><p class="note">{_esc(why)}</p></figure>'


def _table(rows: list[tuple[str, Any]]) -> str:
    cells = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v if isinstance(v, str) else _human(v))}</td></tr>"
                    for k, v in rows)
    return f"<table>{cells}</table>"


def _weights_steps(report: dict[str, Any]) -> list[tuple[str, float | None]]:
    """fp32 -> pruned -> quantized -> clustered -> entropy coded -> on flash, from what the manifest recorded."""
    sizes = report["sizes"]
    breakdown = sizes.get("weights_breakdown") or {}
    dense = breakdown.get("dense_fp32", report["model"].get("parameters", {}).get("bytes"))
    passes = {p["name"] for p in report["passes"]}
    quantized = any(name in passes for name in ("tvmcompress.quantize", "tvmcompress.fold_prequantized"))
    pruned = breakdown.get("after_pruning") if breakdown else (sizes["weights_bytes"] if "tvmcompress.prune" in passes
                                                              and not quantized else None)
    after_quant = breakdown.get("after_quantization") if breakdown else (sizes["weights_bytes"] if quantized else None)
    return [
        ("fp32 weights", dense),
        ("pruned", pruned),
        ("quantized", after_quant),
        ("clustered", breakdown.get("after_clustering")),
        ("entropy coded", breakdown.get("after_entropy_coding")),
        ("on flash", sizes.get("flash_bytes")),
    ]


def _headline(report: dict[str, Any]) -> str:
    sizes, model = report["sizes"], report["model"]
    steps = [v for _, v in _weights_steps(report)[:-1] if v is not None]
    cards = []
    if len(steps) >= 2:
        cards.append(_card("weights", f"{format_bytes(steps[0])} → {format_bytes(steps[-1])}",
                           f"{steps[0] / steps[-1]:.1f}x smaller" if steps[-1] else ""))
    elif steps:
        cards.append(_card("weights", format_bytes(steps[0]), "not compressed"))
    if sizes.get("flash_bytes") is not None:
        cards.append(_card("on flash", format_bytes(sizes["flash_bytes"]),
                           f"library {format_bytes(sizes['library_bytes'])}, runtime "
                           f"{format_bytes(sizes.get('runtime_bytes') or 0)}"))
    accuracy = report.get("quantization_accuracy", {})
    evaluation = accuracy.get("eval")
    budget = accuracy.get("accuracy_budget")
    if budget is not None:
        cards.append(_card(budget["metric"].replace("_", " "),
                           f"{budget['fp32_metric']:.4g} → {budget['final_metric']:.4g}",
                           f"budget {budget['budget']:g} points" + ("" if budget["within_budget"] else " (not met)"),
                           "" if budget["within_budget"] else "bad"))
    elif evaluation is not None:
        drop = evaluation["fp32_metric"] - evaluation["int8_metric"]
        cards.append(_card(evaluation["metric"].replace("_", " "),
                           f"{evaluation['fp32_metric']:.4g} → {evaluation['int8_metric']:.4g}",
                           f"fp32 → int8 on {evaluation['samples']} samples, drop {drop:.3g}"))
    pruning = report.get("pruning")
    macs_before = model["macs"]["total"]
    if pruning is not None:
        cards.append(_card("MACs", f"{format_count(pruning['macs_before'])} → {format_count(pruning['macs_after'])}",
                           f"{pruning['config']['spec']} pruning"))
    elif macs_before:
        cards.append(_card("MACs", format_count(macs_before), "per inference"))
    latency = _kernel_latency(report)
    if latency is not None:
        default_s, chosen_s = latency
        cards.append(_card("kernel time", f"{default_s * 1e3:.3g} → {chosen_s * 1e3:.3g} ms",
                           "default → tuned schedules (measured while tuning)"))
    else:
        cards.append(_card("latency", "not measured", "measure it with `tvmcompress bench`"))
    memory = report.get("memory") or {}
    if memory.get("peak_activation_bytes") is not None:
        cards.append(_card("peak RAM", format_bytes(memory["peak_activation_bytes"]), "activations + scratch"))
    cards.append(_verdict_card(report["verification"]))
    return f'<div class="cards">{"".join(cards)}</div>'


def _verdict_card(verification: dict[str, Any]) -> str:
    mode = verification.get("mode")
    if mode in ("none", "skipped"):
        return _card("verification", "not verified", verification.get("reason", ""), "bad")
    outputs = verification.get("outputs") or []
    if mode == "elf" or not outputs:
        return _card("verification", "library checked", f"runner {verification.get('runner')}: not run here")
    sqnr = min(o["sqnr_db"] for o in outputs) if all("sqnr_db" in o for o in outputs) else None
    agree = [o["top1_agreement"] for o in outputs if o.get("top1_agreement") is not None]
    detail = [f"vs ONNX Runtime on {verification.get('samples', '?')} {verification.get('inputs', '')} inputs"]
    if agree:
        detail.append(f"top-1 agreement {100 * min(agree):.3g}%")
    if verification.get("min_sqnr_db") is not None:
        detail.append(f"floor {verification['min_sqnr_db']:g} dB")
    value = f"passed, SQNR {sqnr:.1f} dB" if sqnr is not None and math.isfinite(sqnr) else "passed (exact)"
    return _card("verification", value, ", ".join(detail), "good")


def _kernel_latency(report: dict[str, Any]) -> tuple[float, float] | None:
    decisions = (report.get("tuning") or {}).get("decisions") or []
    timed = [d for d in decisions if d.get("default_s") and d.get("tuned_s")]
    if not timed:
        return None
    default = sum(d["default_s"] for d in timed)
    chosen = sum(d["tuned_s"] if d["use"] == "tuned" else d["default_s"] for d in timed)
    return default, chosen


def _layer_charts(report: dict[str, Any]) -> list[str]:
    figures = []
    model = report["model"]
    layers = model["macs"]["layers"]
    if layers:
        top = max(layers, key=lambda l: l["macs"])["name"]
        figures.append(_figure("MACs per layer", charts.bar_chart(
            [(l["name"], l["macs"]) for l in layers], "MACs per layer", highlight=top),
            "The source model's layers; the heaviest is in red."))
    pruning = report.get("pruning")
    if pruning is not None:
        figures.append(_figure(f"Pruning: kept ratio per layer ({pruning['config']['spec']})", charts.bar_chart(
            [(f"{l['layer']} ({l['op']})", l["kept"] / l["total"] if l["total"] else None) for l in pruning["layers"]],
            "kept ratio per layer", fmt=lambda v: f"{100 * v:.0f}%", max_value=1.0)))
    else:
        figures.append(_absent("Pruning: kept ratio per layer", "Not pruned (--prune)."))
    analysis = report.get("quantization_accuracy", {}).get("analysis")
    if analysis is not None:
        rows = [(l["name"], l.get("sqnr_db")) for l in analysis["layers"]]
        worst = min((r for r in rows if r[1] is not None), key=lambda r: r[1], default=(None, None))[0]
        figures.append(_figure("int8 sensitivity: SQNR per layer (dB)", charts.bar_chart(
            rows, "int8 SQNR per layer", fmt=lambda v: f"{v:.1f} dB", highlight=worst),
            "Each layer alone in int8; the lowest SQNR (most sensitive) is in red."))
    elif report.get("quantization") is not None:
        figures.append(_absent("int8 sensitivity per layer",
                               "Not measured in this build: `tvmcompress analyze` or --accuracy-budget measures it."))
    clustering = report.get("clustering")
    if clustering is not None:
        figures.append(_figure(f"Clustering: distinct values per channel ({clustering['bits']} bits)", charts.bar_chart(
            [(name, layer["max_values_per_channel"]) for name, layer in sorted(clustering["layers"].items())],
            "distinct values per channel", fmt=lambda v: f"{v:.0f}")))
    decisions = (report.get("tuning") or {}).get("decisions") or []
    if decisions:
        rows = [(d["task"], (d["tuned_s"] if d["use"] == "tuned" else d["default_s"]) * 1e3)
                for d in decisions if d.get("default_s")]
        slowest = max(rows, key=lambda r: r[1])[0] if rows else None
        figures.append(_figure("Latency per kernel (ms)", charts.bar_chart(
            rows, "latency per kernel", fmt=lambda v: f"{v:.3g} ms", highlight=slowest),
            "Measured while tuning, with the schedule the build uses."))
    else:
        figures.append(_absent("Latency per kernel", "No profile: kernels are timed when the build is tuned "
                                                     "(--tune-trials / --tune-minutes)."))
    curve = _distillation_curve(report.get("distillation"))
    if curve:
        figures.append(_figure("Distillation loss", charts.line_chart(curve, "distillation loss", "step")))
    return figures


def _distillation_curve(record: Any) -> list[tuple[str, list[float]]]:
    """The loss curve(s) of a distillation record, read leniently: `loss_curve`/`losses`/`history` as a list of
    numbers or a dict of named lists. Non-finite points are dropped (a diverged step must not print NaN)."""
    if not isinstance(record, dict):
        return []
    for key in ("loss_curve", "losses", "history", "loss"):
        value = record.get(key)
        if isinstance(value, list) and value and all(isinstance(v, (int, float)) for v in value):
            return [("loss", [float(v) for v in value if math.isfinite(v)])]
        if isinstance(value, dict):
            series = [(str(k), [float(x) for x in v if isinstance(x, (int, float)) and math.isfinite(x)])
                      for k, v in value.items() if isinstance(v, list)]
            return [s for s in series if s[1]]
    return []


def _memory_section(report: dict[str, Any]) -> str:
    timeline = report.get("memory_timeline")
    memory = report.get("memory")
    if not timeline:
        why = ("Dynamic shapes: no static plan (fix them with --input-shape)." if memory is None
               else "This artifact predates the timeline record; rebuild it to see one.")
        return _absent("Activation arena over time", why)
    steps = [s["kernel"] for s in timeline["steps"]]
    svg = charts.lifetime_chart(steps, [s["live_bytes"] for s in timeline["steps"]], timeline["tensors"],
                                timeline["peak_step"], "activation arena over time")
    note = (f"Peak at {timeline['peak_kernel']} (call {timeline['peak_step'] + 1} of {len(steps)}): "
            f"{format_bytes(timeline['peak_live_bytes'])} of tensors alive.")
    if memory:
        note += (f" The plan reserves {format_bytes(memory['planned_storage_bytes'])} in {memory['storages']} "
                 f"storages, plus {format_bytes(memory['workspace_bytes'])} kernel scratch and "
                 f"{format_bytes(memory['output_bytes'])} outputs.")
    if timeline.get("tensors_total", len(timeline["tensors"])) > len(timeline["tensors"]):
        note += f" Showing the {len(timeline['tensors'])} largest of {timeline['tensors_total']} tensors."
    return _figure("Activation arena over time (bars: tensors, by planned storage)", svg, note)


def _passes_section(report: dict[str, Any]) -> str:
    items = []
    for step in report["passes"]:
        options = {k: v for k, v in (step.get("options") or {}).items() if v not in (None, {}, [], ())}
        text = f'<span class="opt">: {_esc(_human(options))}</span>' if options else ""
        items.append(f"<li><code>{_esc(step['name'])}</code>{text}</li>")
    return f'<ol class="passes">{"".join(items)}</ol>'


def rebuild_command(report: dict[str, Any]) -> str:
    """The `tvmcompress compile` line that builds this artifact again, from the passes the manifest records.
    File arguments the manifest does not name are placeholders (MODEL.onnx, CALIBRATION.npz)."""
    name = report.get("model_name") or "MODEL"
    args = ["tvmcompress", "compile", f"{name}.onnx", "-o", "OUT", "--target", report["target"]["preset"]]
    passes = {p["name"]: p.get("options") or {} for p in report["passes"]}
    frontend = passes.get("frontend.canonicalize", {})
    for input_name, shape in (frontend.get("input_shapes") or {}).items() if isinstance(
            frontend.get("input_shapes"), dict) else []:
        args += ["--input-shape", f"{input_name}={','.join(str(d) for d in shape)}"]
    quantize = passes.get("tvmcompress.quantize")
    if quantize:
        args += ["--quantize", quantize["mode"]]
        if quantize["mode"] in ("int8", "dynamic-int8") and "calibration_method" in quantize:
            if quantize["mode"] == "int8":
                args += ["--calibration", "CALIBRATION.npz"]
            if quantize["calibration_method"] != "minmax":
                args += ["--calibration-method", quantize["calibration_method"]]
        if quantize.get("exclude"):
            args += ["--exclude", ",".join(quantize["exclude"])]
        if quantize.get("bias_correction") is False:
            args.append("--no-bias-correction")
    prune = passes.get("tvmcompress.prune")
    if prune:
        args += ["--prune", prune["spec"]]
        if prune.get("criterion", "l1") != "l1":
            args += ["--prune-criterion", prune["criterion"]]
    cluster = passes.get("tvmcompress.ClusterWeights")
    if cluster:
        args += ["--cluster-bits", str(cluster["bits"])]
    if (report["sizes"].get("weights_breakdown") or {}).get("weights_file_codec") == "tvcw":
        args.append("--compress-weights")
    tune = passes.get("tvmcompress.tune")
    if tune:
        if tune.get("trials"):
            args += ["--tune-trials", str(tune["trials"])]
        if tune.get("minutes"):
            args += ["--tune-minutes", f"{tune['minutes']:g}"]
    if report.get("quantization_accuracy", {}).get("eval") is not None:
        args += ["--eval-data", "EVAL.npz"]
    return shlex.join(args)


def _recipe_section(report: dict[str, Any]) -> str:
    rows: list[tuple[str, Any]] = [("build time", f"{report['build_seconds']:.1f} s")]
    quantization = report.get("quantization")
    if quantization is not None:
        rows.append(("quantization", quantization))
    versions = report.get("versions")
    if versions:
        rows.append(("versions", versions))
    return (f"<pre>{_esc(rebuild_command(report))}</pre>"
            '<p class="note">Files the manifest does not name are placeholders (their SHA-256 is in '
            "manifest.json).</p>" + _table(rows))


def _sizes_table(report: dict[str, Any]) -> str:
    rows = [(k.replace("_", " "), format_bytes(v) if isinstance(v, (int, float)) else v)
            for k, v in sorted(report["sizes"].items()) if k != "weights_breakdown" and v is not None]
    model = report["model"]
    rows += [("inputs", ", ".join(f"{i['name']} {i['dtype']} {'x'.join(map(str, i['shape']))}" for i in model["inputs"])),
             ("outputs", ", ".join(f"{o['name']} {o['dtype']} {'x'.join(map(str, o['shape']))}" for o in model["outputs"])),
             ("operators", ", ".join(f"{op} x{n}" for op, n in sorted(model["op_histogram"].items())))]
    return _table(rows)


def render_html(report: dict[str, Any]) -> str:
    """The report page for `report` (report.build_report's dict)."""
    target = report["target"]
    name = report.get("model_name") or "model"
    compressed = report["verification"].get("compressed") or "float"
    header = (f"<h1>{_esc(name)} for {_esc(target['preset'])}</h1>"
              f'<p class="sub">{_esc(compressed)} build, {_esc(target["arch"])}, '
              f"{_esc(format_count(report['model']['macs']['total']))} MACs, "
              f"{_esc(report['model']['num_nodes'])} ONNX nodes</p>")
    body = [
        header,
        _headline(report),
        "<h2>Size, step by step</h2>",
        _figure("Weights through each compression step, then the whole binary",
                charts.waterfall(_weights_steps(report), "size waterfall"),
                "Dashed: what the step removed. On flash: library + weights + the TVM runtime. Steps that did not run are "
                "shown as such, not estimated."),
        "<h2>Per layer</h2>",
        "".join(_layer_charts(report)),
        "<h2>Memory</h2>",
        _memory_section(report),
        "<h2>Passes that ran</h2>",
        _passes_section(report),
        "<h2>Recipe</h2>",
        _recipe_section(report),
        "<h2>Sizes and model</h2>",
        _sizes_table(report),
    ]
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{_esc(name)}: tvmcompress report</title><style>{_CSS}</style></head>"
            f"<body>{''.join(body)}</body></html>\n")
