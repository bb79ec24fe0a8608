"""Line plots drawn on the gateway as SVG: no script, no library, readable on a phone.

Why server-side SVG: the page must work with JavaScript off and without a CDN, and a plot of
600 points is ~8 KiB of text a browser scales to any screen (``viewBox``). What one plot shows:

- the series as a polyline over the span ending now (a gap in the data, e.g. a device offline,
  breaks the line; lone samples are dots), its min, max and last value in the heading;
- y ticks at 1-2-5 steps, time ticks in UTC (10 min over an hour, 3 h over a day);
- the point's alarm levels (``thresholds``: label, level) as dashed red lines with their labels as
  given, always in range, so a level rising toward its alarm is seen at a glance;
- an empty series as a frame saying "no data yet".

``downsample`` keeps at most ``MAX_POINTS``: per time bucket the lowest and the highest sample,
in the order they came, so a one-poll spike is never smoothed away. Every text is escaped.
"""

from __future__ import annotations

import math
import time
from html import escape
from typing import Sequence

__all__ = ["line_plot", "downsample", "number", "MAX_POINTS", "WIDTH", "HEIGHT"]

MAX_POINTS = 600
WIDTH, HEIGHT = 600, 220
LEFT, RIGHT, TOP, BOTTOM = 56, 20, 26, 24  # margins around the plot area
LINE, ALARM, GRID, TEXT = "#1f5fbf", "#c62828", "#dddddd", "#333333"


def number(value: float, digits: int = 4) -> str:
    """A value as a technician reads it: ``3``, ``1.23``, ``0.0042``, ``4.2e-06``, ``12,345``, ``1.2e+09``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if not math.isfinite(value):
        return str(value)
    if value == int(value) and abs(value) < 1e9:
        return f"{int(value):,}" if abs(value) >= 1e4 else str(int(value))
    if 1e4 <= abs(value) < 1e9:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def downsample(series: Sequence[tuple[int, float]], max_points: int = MAX_POINTS) -> list[tuple[int, float]]:
    """At most ``max_points`` of ``series`` (sorted by time): per bucket its min and max, in time order."""
    points = sorted(series)
    if len(points) <= max_points:
        return points
    buckets = max(1, max_points // 2)
    t0, t1 = points[0][0], points[-1][0]
    width = (t1 - t0) / buckets or 1
    out: list[tuple[int, float]] = []
    group: list[tuple[int, float]] = []
    current = 0
    for p in points:
        b = min(buckets - 1, int((p[0] - t0) / width))
        if b != current and group:
            out.extend(_extremes(group))
            group = []
        current = b
        group.append(p)
    out.extend(_extremes(group))
    return out


def _extremes(group: list[tuple[int, float]]) -> list[tuple[int, float]]:
    lo = min(group, key=lambda p: p[1])
    hi = max(group, key=lambda p: p[1])
    return [lo] if lo is hi or lo == hi else sorted((lo, hi))


def _step(span: float, ticks: int = 4) -> float:
    """A 1-2-5 step giving about ``ticks`` intervals over ``span``."""
    raw = span / ticks
    magnitude = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if m * magnitude >= raw:
            return m * magnitude
    return 10 * magnitude


def _y_range(values: Sequence[float]) -> tuple[float, float, float]:
    lo, hi = min(values), max(values)
    if hi - lo < 1e-9 * max(1.0, abs(hi)):
        pad = max(abs(hi) * 0.1, 1.0)
        lo, hi = lo - pad, hi + pad
    step = _step(hi - lo)
    return math.floor(lo / step) * step, math.ceil(hi / step) * step, step


def _tick_text(value: float, step: float) -> str:
    decimals = max(0, -math.floor(math.log10(step))) if step < 1 else 0
    if abs(value) < step / 2:
        value = 0.0
    return f"{value:.{decimals}f}" if abs(value) < 1e6 else number(value, 3)


def _segments(points: list[tuple[int, float]], span_ms: int) -> list[list[tuple[int, float]]]:
    """Runs of points without a gap: a gap is more than 3 typical intervals and more than 1/100 of the span."""
    if len(points) < 2:
        return [points] if points else []
    gaps = sorted(b[0] - a[0] for a, b in zip(points, points[1:]))
    limit = max(3 * gaps[len(gaps) // 2], span_ms / 100)
    runs = [[points[0]]]
    for a, b in zip(points, points[1:]):
        if b[0] - a[0] > limit:
            runs.append([])
        runs[-1].append(b)
    return runs


def _svg(title: str, body: list[str]) -> str:
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" '
            f'height="{HEIGHT}" role="img" aria-label="{escape(title, quote=True)}" class="plot" '
            f'font-family="system-ui, sans-serif" font-size="11">')
    return "\n".join([head, f"<title>{escape(title, quote=True)}</title>", *body, "</svg>"])


def line_plot(series: Sequence[tuple[int, float]], *, title: str, span_s: float,
              thresholds: Sequence[tuple[str, float]] = (), now_ms: int | None = None,
              max_points: int = MAX_POINTS) -> str:
    """The SVG of ``series`` ((ts ms, value)) over the ``span_s`` seconds ending at ``now_ms``."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    span_ms = int(span_s * 1000)
    t0 = now_ms - span_ms
    points = [(t, float(v)) for t, v in downsample(series, max_points) if t0 <= t <= now_ms
              and isinstance(v, (int, float)) and math.isfinite(v)]
    x0, x1, y0, y1 = LEFT, WIDTH - RIGHT, TOP, HEIGHT - BOTTOM
    frame = f'<rect x="{x0}" y="{y0}" width="{x1 - x0}" height="{y1 - y0}" fill="#fafafa" stroke="{GRID}"/>'
    if not points:
        return _svg(f"{title}: no data yet", [
            f'<text x="{x0}" y="16" fill="{TEXT}" font-weight="bold">{escape(title, quote=True)}</text>', frame,
            f'<text x="{(x0 + x1) / 2}" y="{(y0 + y1) / 2}" text-anchor="middle" fill="#777" font-size="14" '
            f'class="no-data">no data yet</text>'])
    levels = [float(v) for _, v in thresholds if math.isfinite(v)]
    lo, hi, step = _y_range([v for _, v in points] + levels)

    def x(t: int) -> float:
        return x0 + (t - t0) / span_ms * (x1 - x0)

    def y(v: float) -> float:
        return y1 - (v - lo) / (hi - lo) * (y1 - y0)

    values = [v for _, v in points]
    summary = f"min {number(min(values))} · max {number(max(values))} · last {number(values[-1])}"
    body = [f'<text x="{x0}" y="16" fill="{TEXT}"><tspan font-weight="bold">{escape(title, quote=True)}</tspan>'
            f'<tspan dx="10">{escape(summary, quote=True)}</tspan></text>', frame]
    tick = lo
    while tick <= hi + step / 2:
        ty = y(tick)
        body.append(f'<line x1="{x0}" x2="{x1}" y1="{ty:.1f}" y2="{ty:.1f}" stroke="{GRID}"/>'
                    f'<text x="{x0 - 4}" y="{ty + 4:.1f}" text-anchor="end" fill="{TEXT}">'
                    f'{escape(_tick_text(tick, step))}</text>')
        tick += step
    every_ms = 600_000 if span_ms <= 3_600_000 else 10_800_000
    t = -(-t0 // every_ms) * every_ms
    while t <= now_ms:
        tx = x(t)
        body.append(f'<line x1="{tx:.1f}" x2="{tx:.1f}" y1="{y0}" y2="{y1}" stroke="{GRID}"/>'
                    f'<text x="{tx:.1f}" y="{y1 + 14}" text-anchor="middle" fill="{TEXT}">'
                    f'{time.strftime("%H:%M", time.gmtime(t / 1000))}</text>')
        t += every_ms
    body.append(f'<text x="4" y="{y1 + 14}" fill="#777">UTC</text>')
    right_y = left_y = -100.0  # where the last label on each side went: close ones take turns
    for label, level in sorted(((lb, v) for lb, v in thresholds if math.isfinite(v)), key=lambda t: -t[1]):
        ly = y(level)
        right = abs(ly - right_y) >= 13 or abs(ly - left_y) < 13
        lx, anchor = (x1 - 4, "end") if right else (x0 + 4, "start")
        if right:
            right_y = ly
        else:
            left_y = ly
        body.append(f'<line class="threshold" x1="{x0}" x2="{x1}" y1="{ly:.1f}" y2="{ly:.1f}" stroke="{ALARM}" '
                    f'stroke-dasharray="6 4"/><text x="{lx}" y="{ly - 3:.1f}" text-anchor="{anchor}" fill="{ALARM}" '
                    f'stroke="#fafafa" stroke-width="3" paint-order="stroke">{escape(label, quote=True)}</text>')
    for run in _segments(points, span_ms):
        if len(run) == 1:
            body.append(f'<circle class="series" cx="{x(run[0][0]):.1f}" cy="{y(run[0][1]):.1f}" r="2.5" '
                        f'fill="{LINE}"/>')
        else:
            coords = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in run)
            body.append(f'<polyline class="series" data-points="{len(run)}" points="{coords}" fill="none" '
                        f'stroke="{LINE}" stroke-width="1.5" stroke-linejoin="round"/>')
    return _svg(f"{title}: {summary}", body)
