"""report.html of a real int8 + pruned + clustered digits CNN build, checked structurally (no browser; the browser
test is tests/e2e/test_report_browser.py), plus the chart and timeline helpers it is drawn with."""

from __future__ import annotations

import json
import math
import os
import re
from html.parser import HTMLParser

import pytest

from tvmcompress import charts
from tvmcompress.cli import main
from tvmcompress.report_html import _human, rebuild_command

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")


def compile_digits(out: str) -> None:
    """int8 + channel pruning + 4-bit clustering + entropy-coded weights, with --eval-data: every chart's input."""
    data = os.path.join(EXAMPLES, "digits_test.npz")
    assert main(["-q", "compile", os.path.join(EXAMPLES, "digits_cnn.onnx"), "-o", out, "--quantize", "int8",
                 "--calibration", data, "--eval-data", data, "--prune", "channel:0.5", "--cluster-bits", "4",
                 "--compress-weights"]) == 0


@pytest.fixture(scope="module")
def digits_artifact(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("report") / "digits")
    compile_digits(out)
    return out


class _Page(HTMLParser):
    """Collects the page's text (outside <style>), its charts and every attribute value."""

    def __init__(self):
        super().__init__()
        self.text: list[str] = []
        self.charts: list[str] = []
        self.attributes: list[str] = []
        self.tags: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self._in_style = tag == "style"
        attrs = dict(attrs)
        self.attributes += [v for v in attrs.values() if v]
        if tag == "svg" and "chart" in (attrs.get("class") or ""):
            self.charts.append(attrs.get("aria-label", ""))

    def handle_endtag(self, tag):
        if tag == "style":
            self._in_style = False

    def handle_data(self, data):
        if not self._in_style:
            self.text.append(data)


def parse(path: str) -> _Page:
    page = _Page()
    with open(path, encoding="utf-8") as f:
        page.feed(f.read())
    return page


def test_report_has_headline_and_charts_without_reprs_or_network(digits_artifact):
    page = parse(os.path.join(digits_artifact, "report.html"))
    with open(os.path.join(digits_artifact, "manifest.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    text = "".join(page.text)
    html_source = open(os.path.join(digits_artifact, "report.html"), encoding="utf-8").read()
    # The charts the build recorded data for, each an inline <svg>.
    assert set(page.charts) >= {"size waterfall", "MACs per layer", "kept ratio per layer",
                                "distinct values per channel", "activation arena over time"}
    # Headline: model, target, sizes before -> after from the manifest, accuracy, the verification verdict.
    breakdown = manifest["sizes"]["weights_breakdown"]
    assert "digits_cnn for host" in text
    assert f"{charts.format_bytes(breakdown['dense_fp32'])} → {charts.format_bytes(breakdown['after_entropy_coding'])}" in text
    evaluation = manifest["quantization"]["eval"]
    assert f"{evaluation['fp32_metric']:.4g} → {evaluation['int8_metric']:.4g}" in text
    sqnr = manifest["verification"]["outputs"][0]["sqnr_db"]
    assert f"passed, SQNR {sqnr:.1f} dB" in text
    # Not measured is said, not invented.
    assert "not measured" in text and "No profile" in text
    # No NaN anywhere, no Python reprs in the text, no network: one self-contained file.
    assert "NaN" not in html_source and "inf " not in text
    assert "{" not in text and "None" not in text and "True" not in text
    assert not re.search(r"https?://", html_source)
    assert not {"script", "link", "img", "iframe"} & set(page.tags)
    # The passes as text, the recipe as a command.
    assert "tvmcompress.ClusterWeights: bits 4" in text
    assert "--prune channel:0.5 --cluster-bits 4 --compress-weights" in text
    # report.json carries the same data the page was drawn from.
    report = json.load(open(os.path.join(digits_artifact, "report.json"), encoding="utf-8"))
    assert report["memory_timeline"] == manifest["memory_timeline"]


def test_memory_timeline_peak_fits_the_static_plan(digits_artifact):
    """Tensors alive at the same call sit in different storages (or the outputs), so the live bytes at any call
    cannot exceed what the plan reserves."""
    manifest = json.load(open(os.path.join(digits_artifact, "manifest.json"), encoding="utf-8"))
    timeline, memory = manifest["memory_timeline"], manifest["memory"]
    assert 0 < timeline["peak_live_bytes"] <= memory["planned_storage_bytes"] + memory["output_bytes"]
    steps = timeline["steps"]
    assert timeline["peak_live_bytes"] == max(s["live_bytes"] for s in steps)
    assert steps[timeline["peak_step"]]["kernel"] == timeline["peak_kernel"]
    for tensor in timeline["tensors"]:
        assert 0 <= tensor["first"] <= tensor["last"] < len(steps)
    # The returned tensor (the logits, 1x10 float32) is alive at the last call.
    assert steps[-1]["live_bytes"] >= 40


def test_waterfall_shows_steps_that_did_not_run_as_absent():
    svg = charts.waterfall([("fp32", 1000.0), ("pruned", None), ("quantized", 250.0)], "w")
    assert "did not run" in svg and "0.25x" in svg  # compared with the last step that ran


def test_charts_refuse_nan():
    with pytest.raises(ValueError, match="not finite"):
        charts.bar_chart([("a", math.nan)], "x")


def test_config_values_read_as_text():
    assert _human({"mode": "int8", "exclude": [], "percentile": 99.99, "smoothquant": None}) == (
        "exclude none; mode int8; percentile 99.99; smoothquant none")


def test_rebuild_command_for_a_float_build():
    report = {"model_name": "m", "target": {"preset": "aarch64"}, "sizes": {},
              "passes": [{"name": "frontend.canonicalize", "options": {"input_shapes": {"x": [1, 3]}}}]}
    assert rebuild_command(report) == "tvmcompress compile m.onnx -o OUT --target aarch64 --input-shape x=1,3"


def test_report_command_regenerates_the_same_page(digits_artifact, capsys):
    page = os.path.join(digits_artifact, "report.html")
    written = open(page, encoding="utf-8").read()
    os.remove(page)
    assert main(["report", digits_artifact]) == 0
    assert open(page, encoding="utf-8").read() == written
    assert capsys.readouterr().out.strip() == f"wrote {os.path.abspath(page)}"


def test_report_command_compares_side_by_side(digits_artifact, tmp_path, capsys):
    manifest = json.load(open(os.path.join(digits_artifact, "manifest.json"), encoding="utf-8"))
    before = {name: os.path.getmtime(os.path.join(digits_artifact, name)) for name in os.listdir(digits_artifact)}
    out = tmp_path / "side.html"
    assert main(["report", digits_artifact, "--compare", digits_artifact, "--time", "--html", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split("  ")[0]: line for line in lines}
    assert rows["peak RAM"].count(charts.format_bytes(manifest["memory"]["peak_activation_bytes"])) == 2
    assert rows["accuracy"].count("top1 accuracy 98.61 -> 98.33") == 2
    assert len(re.findall(r"\d ms \(median, zeros\)", rows["latency"])) == 2
    assert "<table>" in out.read_text(encoding="utf-8")
    # Comparing never rewrites the artifacts it reads.
    assert before == {name: os.path.getmtime(os.path.join(digits_artifact, name)) for name in os.listdir(digits_artifact)}


@pytest.mark.parametrize("argv, message", [
    (["report", "{tmp}"], "is not a tvmcompress artifact (no manifest.json)"),
    (["report", "{tmp}/missing"], "is not a directory"),
    (["report", "{art}", "--compare", "{tmp}"], "is not a tvmcompress artifact"),
    (["report", "{art}", "--html", "{tmp}/x.html"], "--html is for --compare"),
    (["report", "{art}", "--time"], "--time is for --compare"),
    (["report", "{art}", "--compare", "{art}", "--html", "{tmp}/no/x.html"], "its directory does not exist"),
])
def test_report_command_errors_are_one_line_exit_2(digits_artifact, tmp_path, capsys, argv, message):
    argv = [a.format(tmp=tmp_path, art=digits_artifact) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and err.startswith("tvmcompress: error: ")
    assert list(tmp_path.iterdir()) == []


def test_distillation_curve_is_read_leniently_and_never_plots_nan():
    from tvmcompress.report_html import _distillation_curve

    assert _distillation_curve({"loss_curve": [2.0, 1.0, float("nan"), 0.5]}) == [("loss", [2.0, 1.0, 0.5])]
    assert _distillation_curve({"history": {"train": [1.0, 0.5], "val": []}}) == [("train", [1.0, 0.5])]
    assert _distillation_curve(None) == [] and _distillation_curve({"steps": 3}) == []
    svg = charts.line_chart([("loss", [2.0, 1.0, 0.5])], "distillation loss")
    assert svg.count("<polyline") == 1 and "NaN" not in svg
