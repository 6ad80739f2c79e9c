"""Small inline-SVG charts for report.html: horizontal bars, a waterfall, a line chart and a lifetime (Gantt) chart.

Why our own: the report must be one file that opens offline, on a phone and on paper, and these four shapes are a
few dozen lines each. Every chart is an `<svg viewBox=...>` that scales to its container's width (no fixed pixel
width, so no horizontal scrolling on a phone) and carries a `<title>` per mark so a hover shows the exact value.

All text is escaped here; callers pass plain strings and numbers. A value that is None is drawn as absent (a grey
"not run" row), never as zero; NaN and infinities are refused, so a chart can never print "NaN".
"""

from __future__ import annotations

import html
import math
from typing import Callable, Sequence

WIDTH = 640
_ROW = 22
_LABEL_WIDTH = 150
_VALUE_WIDTH = 110
_PALETTE = ("#3367d6", "#e8710a", "#1e8e3e", "#9334e6", "#d93025", "#12b5cb", "#f9ab00", "#5f6368")
ACCENT = "#d93025"


def format_bytes(value: float) -> str:
    """1,234 B / 12.3 kB / 4.56 MB (powers of 1000, as sizes on disk are usually quoted)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value:,.0f} B"


def format_count(value: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{unit}"
    return f"{value:.3g}"


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _check(value: float | None) -> float | None:
    if value is not None and not math.isfinite(value):
        raise ValueError(f"chart value {value} is not finite")
    return value


def _svg(height: int, body: str, label: str) -> str:
    return (f'<svg class="chart" role="img" aria-label="{_esc(label)}" viewBox="0 0 {WIDTH} {height}" '
            f'preserveAspectRatio="xMinYMin meet">{body}</svg>')


def _clip(text: str, chars: int = 26) -> str:
    return text if len(text) <= chars else text[: chars - 1] + "…"


def bar_chart(rows: Sequence[tuple[str, float | None]], label: str, fmt: Callable[[float], str] = format_count,
              highlight: str | None = None, max_value: float | None = None) -> str:
    """One horizontal bar per (name, value). None: the row says "not recorded". `highlight` names a row to draw
    in the accent colour (the peak, the worst layer). `max_value` fixes the scale (1.0 for ratios)."""
    values = [_check(v) for _, v in rows]
    top = max_value if max_value is not None else max([v for v in values if v is not None] or [1.0])
    top = top if top > 0 else 1.0
    span = WIDTH - _LABEL_WIDTH - _VALUE_WIDTH
    parts = []
    for i, ((name, _), value) in enumerate(zip(rows, values)):
        y = i * _ROW
        parts.append(f'<text x="{_LABEL_WIDTH - 6}" y="{y + 15}" text-anchor="end" class="lbl">'
                     f'<title>{_esc(name)}</title>{_esc(_clip(name))}</text>')
        if value is None:
            parts.append(f'<text x="{_LABEL_WIDTH}" y="{y + 15}" class="absent">not recorded</text>')
            continue
        width = max(1.0, span * max(value, 0.0) / top)
        color = ACCENT if name == highlight else _PALETTE[0]
        parts.append(f'<rect x="{_LABEL_WIDTH}" y="{y + 3}" width="{width:.1f}" height="{_ROW - 6}" fill="{color}">'
                     f'<title>{_esc(name)}: {_esc(fmt(value))}</title></rect>')
        parts.append(f'<text x="{_LABEL_WIDTH + width + 4:.1f}" y="{y + 15}" class="val">{_esc(fmt(value))}</text>')
    return _svg(max(1, len(rows)) * _ROW + 4, "".join(parts), label)


def waterfall(steps: Sequence[tuple[str, float | None]], label: str, fmt: Callable[[float], str] = format_bytes) -> str:
    """Size after each step, each bar with the saving from the previous recorded step. A None step did not run:
    it is drawn as a grey "did not run" row and the next step compares with the last one that did."""
    values = [_check(v) for _, v in steps]
    recorded = [v for v in values if v is not None]
    top = max(recorded or [1.0]) or 1.0
    if len(recorded) > 2 and recorded[-1] > 2 * max(recorded[:-1]):
        # A last total (the whole binary with its runtime) far above the steps would flatten them to slivers: the
        # scale follows the steps and that bar is drawn broken, with its value written out.
        top = max(recorded[:-1]) or 1.0
    span = WIDTH - _LABEL_WIDTH - _VALUE_WIDTH - 40
    parts, previous = [], None
    for i, ((name, _), value) in enumerate(zip(steps, values)):
        y = i * _ROW
        parts.append(f'<text x="{_LABEL_WIDTH - 6}" y="{y + 15}" text-anchor="end" class="lbl">{_esc(name)}</text>')
        if value is None:
            parts.append(f'<text x="{_LABEL_WIDTH}" y="{y + 15}" class="absent">did not run</text>')
            continue
        broken = value > top
        width = span if broken else max(1.0, span * value / top)
        parts.append(f'<rect x="{_LABEL_WIDTH}" y="{y + 3}" width="{width:.1f}" height="{_ROW - 6}" '
                     f'fill="{_PALETTE[i % len(_PALETTE)]}"><title>{_esc(name)}: {_esc(fmt(value))}</title></rect>')
        if broken:
            mid = _LABEL_WIDTH + span * 0.5
            parts.append(f'<path d="M{mid - 4:.1f},{y + 21} L{mid + 2:.1f},{y + 1} M{mid + 4:.1f},{y + 21} '
                         f'L{mid + 10:.1f},{y + 1}" class="break"/>')
            parts.append(f'<text x="{_LABEL_WIDTH + span + 4:.1f}" y="{y + 15}" class="val">{_esc(fmt(value))} '
                         f'(axis broken)</text>')
            previous = value
            continue
        if previous is not None and previous > 0 and value != previous and previous <= top:
            # The part of the previous bar this step removed, hatched, so the saving reads at a glance.
            removed = max(0.0, span * (previous - value) / top)
            parts.append(f'<rect x="{_LABEL_WIDTH + width:.1f}" y="{y + 3}" width="{removed:.1f}" '
                         f'height="{_ROW - 6}" class="removed"/>')
            change = f" ({value / previous:.2f}x)"
        else:
            change = ""
        parts.append(f'<text x="{_LABEL_WIDTH + max(width, span * (previous or 0) / top) + 4:.1f}" y="{y + 15}" '
                     f'class="val">{_esc(fmt(value) + change)}</text>')
        previous = value
    return _svg(max(1, len(steps)) * _ROW + 4, "".join(parts), label)


def line_chart(series: Sequence[tuple[str, Sequence[float]]], label: str, x_label: str = "step",
               fmt: Callable[[float], str] = format_count) -> str:
    """One polyline per (name, values), x = index, sharing one y scale, with a legend."""
    height, left, bottom, top_pad = 220, 60, 30, 10
    all_values = [_check(v) for _, vs in series for v in vs]
    if not all_values:
        return _svg(20, '<text x="0" y="15" class="absent">no values</text>', label)
    low, high = min(all_values), max(all_values)
    high = high if high > low else low + 1.0
    count = max(len(vs) for _, vs in series)
    plot_w, plot_h = WIDTH - left - 10, height - bottom - top_pad

    def xy(i: int, v: float) -> str:
        x = left + (plot_w * i / max(1, count - 1))
        y = top_pad + plot_h * (1 - (v - low) / (high - low))
        return f"{x:.1f},{y:.1f}"

    parts = [f'<line x1="{left}" y1="{top_pad + plot_h}" x2="{left + plot_w}" y2="{top_pad + plot_h}" class="axis"/>',
             f'<line x1="{left}" y1="{top_pad}" x2="{left}" y2="{top_pad + plot_h}" class="axis"/>',
             f'<text x="{left - 4}" y="{top_pad + 10}" text-anchor="end" class="val">{_esc(fmt(high))}</text>',
             f'<text x="{left - 4}" y="{top_pad + plot_h}" text-anchor="end" class="val">{_esc(fmt(low))}</text>',
             f'<text x="{left + plot_w}" y="{height - 8}" text-anchor="end" class="val">{_esc(x_label)} '
             f'{count - 1}</text>']
    for k, (name, values) in enumerate(series):
        color = _PALETTE[k % len(_PALETTE)]
        points = " ".join(xy(i, v) for i, v in enumerate(values))
        parts.append(f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="2">'
                     f'<title>{_esc(name)}</title></polyline>')
        parts.append(f'<text x="{left + 8 + 150 * k}" y="{height - 8}" fill="{color}" class="val">{_esc(name)}</text>')
    return _svg(height, "".join(parts), label)


def lifetime_chart(steps: Sequence[str], live_bytes: Sequence[float], tensors: Sequence[dict], peak_step: int,
                   label: str) -> str:
    """The activation arena over the kernel calls: an area of live bytes per call on top (peak marked) and one
    bar per tensor from its first to its last use below, coloured by the storage it was planned into."""
    left, area_h = _LABEL_WIDTH, 90
    count = max(1, len(steps))
    span = WIDTH - left - 10
    step_w = span / count
    top = max([_check(v) for v in live_bytes] or [1.0]) or 1.0
    parts = [f'<text x="{left - 6}" y="14" text-anchor="end" class="lbl">live bytes</text>']
    for i, (kernel, value) in enumerate(zip(steps, live_bytes)):
        h = area_h * value / top
        color = ACCENT if i == peak_step else "#8ab4f8"
        parts.append(f'<rect x="{left + i * step_w:.1f}" y="{area_h - h + 4:.1f}" width="{max(step_w - 1, 0.5):.1f}" '
                     f'height="{h:.1f}" fill="{color}"><title>{_esc(kernel)}: {_esc(format_bytes(value))} live'
                     f'</title></rect>')
    peak_x = left + (peak_step + 0.5) * step_w
    anchor = "end" if peak_x > WIDTH * 0.6 else "start"
    parts.append(f'<text x="{peak_x:.1f}" y="{area_h + 18}" text-anchor="{anchor}" class="val peak">peak: '
                 f'{_esc(_clip(steps[peak_step], 30))} ({_esc(format_bytes(live_bytes[peak_step]))})</text>')
    storages = sorted({t["storage"] for t in tensors})
    y0 = area_h + 26
    row = 12
    for j, tensor in enumerate(tensors):
        y = y0 + j * row
        color = _PALETTE[storages.index(tensor["storage"]) % len(_PALETTE)]
        x = left + tensor["first"] * step_w
        w = max((tensor["last"] - tensor["first"] + 1) * step_w - 1, 1.0)
        parts.append(f'<text x="{left - 6}" y="{y + 10}" text-anchor="end" class="lbl small">'
                     f'{_esc(format_bytes(tensor["bytes"]))} {_esc(tensor["storage"])}</text>')
        parts.append(f'<rect x="{x:.1f}" y="{y + 2}" width="{w:.1f}" height="{row - 3}" fill="{color}">'
                     f'<title>{_esc(tensor["name"])}: {_esc(format_bytes(tensor["bytes"]))} in {_esc(tensor["storage"])}, '
                     f'alive from {_esc(steps[tensor["first"]])} to {_esc(steps[tensor["last"]])}</title></rect>')
    return _svg(y0 + len(tensors) * row + 4, "".join(parts), label)
