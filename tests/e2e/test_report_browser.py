"""report.html in a real browser: headless Chromium lays out the int8 + pruned + clustered digits CNN's report at
a phone's width and a desktop's, a probe script checks the DOM (charts drawn with a size, no NaN, nothing wider
than the viewport), and the screenshot must not be blank. Screenshots are kept under $REPORT_SCREENSHOT_DIR (or the
test's tmp_path) as artifacts."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from test_report_html import compile_digits  # noqa: E402

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

# Runs after layout; writes its findings into the DOM, which --dump-dom prints.
_PROBE = """<script>
window.addEventListener('load', () => {
  const charts = [...document.querySelectorAll('svg.chart')];
  const out = {
    charts: charts.map(c => ({label: c.getAttribute('aria-label'), w: c.getBoundingClientRect().width,
                              h: c.getBoundingClientRect().height})),
    scrollWidth: document.documentElement.scrollWidth,
    innerWidth: window.innerWidth,
    text: document.body.innerText,
  };
  const pre = document.createElement('pre'); pre.id = 'probe'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def _chromium(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--allow-file-access-from-files", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (scripts/setup.sh installs it)")
@pytest.mark.parametrize("width", [390, 1000])
def test_report_renders_in_chromium(tmp_path, width):
    Image = pytest.importorskip("PIL.Image")
    artifact = str(tmp_path / "digits")
    compile_digits(artifact)
    page = os.path.join(artifact, "report.html")
    probed = tmp_path / "probed.html"
    probed.write_text(open(page, encoding="utf-8").read().replace("</body>", _PROBE + "</body>"), encoding="utf-8")

    dom = _chromium(f"--window-size={width},900", "--virtual-time-budget=3000", "--dump-dom", probed.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    match = re.search(r'<pre id="probe">(.*?)</pre>', dom.stdout, re.S)
    assert match, dom.stdout[-2000:]
    probe = json.loads(match.group(1).replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">")
                       .replace("&amp;", "&"))
    labels = [c["label"] for c in probe["charts"]]
    assert len(labels) >= 5 and "size waterfall" in labels and "activation arena over time" in labels
    assert all(c["w"] > 100 and c["h"] > 10 for c in probe["charts"]), probe["charts"]
    assert "NaN" not in probe["text"] and "digits_cnn for host" in probe["text"]
    assert probe["scrollWidth"] <= probe["innerWidth"], "the page scrolls sideways"

    keep = os.environ.get("REPORT_SCREENSHOT_DIR") or str(tmp_path)
    os.makedirs(keep, exist_ok=True)
    shot = os.path.join(keep, f"report-{width}.png")
    taken = _chromium(f"--window-size={width},2400", f"--screenshot={shot}", "file://" + os.path.abspath(page))
    assert taken.returncode == 0 and os.path.isfile(shot), taken.stderr[-2000:]
    image = Image.open(shot).convert("L")
    histogram = image.histogram()
    # Not blank: a white page has one grey level; a report has text, bars in several colours and dark headings.
    dark = sum(histogram[:128]) / (image.width * image.height)
    assert len([count for count in histogram if count]) > 20 and dark > 0.005, dark
