"""Charts as inline SVG, drawn in Python: nothing to fetch, so a report opens offline and prints as it shows.

    scatter(points, ...)   x and y with a third value as colour: size × latency × accuracy
    bars(rows, ...)        horizontal bars with their numbers: route counts, items per device
    meter(parts, total)    one bar split into parts against a total: memory use against a budget

Every mark carries a <title>, so hovering shows its exact numbers.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from edge_sdk.apps.pages.html import Html, esc

Format = Callable[[float], str]
GOOD, MIDDLE, POOR = (26, 152, 80), (230, 160, 0), (215, 48, 39)
NEUTRAL = "#9aa5b1"
PALETTE = ("#1f6feb", "#2f9e44", "#e8590c", "#9c36b5", "#0c8599", "#c2255c", "#5c940d", "#862e9c")
_ids = itertools.count(1)  # gradient ids unique within a page
TEXT_PX = 7  # about the width of one character of the 11-12 px labels


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    label: str
    shade: float | None = None  # 0 best .. 1 worst (the colour); None: not judged (grey)
    note: str = ""  # shown on hover
    mark: str = ""  # a short text inside the marker (a rank)
    hollow: bool = False  # did not qualify: an outline only


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    text: str = ""  # the number as shown; default: the value
    colour: str = PALETTE[0]
    note: str = ""


def shade_colour(t: float | None) -> str:
    """Green (0) through amber to red (1); grey for None."""
    if t is None or math.isnan(t):
        return NEUTRAL
    t = min(1.0, max(0.0, t))
    a, b, u = (GOOD, MIDDLE, t * 2) if t < 0.5 else (MIDDLE, POOR, t * 2 - 1)
    r, g, bl = (round(x + (y - x) * u) for x, y in zip(a, b, strict=True))
    return f"#{r:02x}{g:02x}{bl:02x}"


class Axis:
    """A numeric axis: linear, or logarithmic when the values span more than `log_span` (and are positive)."""

    def __init__(
        self, values: Sequence[float], start: float, end: float, *, log: bool | None = None, unit: float = 1.0
    ) -> None:
        lo, hi = min(values), max(values)
        self.log = (lo > 0 and hi / lo > 20) if log is None else (log and lo > 0)
        self.unit = unit  # ticks fall on round numbers of this unit (1024 for KB, ...)
        if self.log:
            a, b = math.log10(lo), math.log10(hi)
            pad = max((b - a) * 0.08, 0.05)
            self.lo, self.hi = 10 ** (a - pad), 10 ** (b + pad)
        else:
            if lo >= 0:
                lo = 0.0  # sizes and times from zero: a mark twice as far is twice as much
            pad = (hi - lo) * 0.08 or (abs(hi) * 0.1 or 1.0)
            self.lo, self.hi = (lo if lo == 0.0 else lo - pad), hi + pad
        self.start, self.end = start, end

    def at(self, v: float) -> float:
        if self.log:
            u = (math.log10(v) - math.log10(self.lo)) / (math.log10(self.hi) - math.log10(self.lo))
        else:
            u = (v - self.lo) / (self.hi - self.lo)
        return self.start + u * (self.end - self.start)

    def ticks(self) -> list[float]:
        if self.log:
            k0, k1 = math.floor(math.log10(self.lo)), math.ceil(math.log10(self.hi))
            steps = (1, 2, 5) if k1 - k0 <= 3 else (1,)
            found = [m * 10.0**k for k in range(k0, k1 + 1) for m in steps]
            return [t for t in found if self.lo <= t <= self.hi]
        lo, hi = self.lo / self.unit, self.hi / self.unit
        step = nice_step((hi - lo) / 7)  # 4 to 8 ticks
        first = math.ceil(lo / step) * step
        return [(first + i * step) * self.unit for i in range(int((hi - first) / step + 1e-9) + 1)]


def nice_step(raw: float) -> float:
    """1, 2 or 5 times a power of ten, at least `raw`."""
    if raw <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def scatter(
    points: Sequence[Point],
    *,
    x_label: str,
    y_label: str,
    x_format: Format,
    y_format: Format,
    shade_label: str = "",
    shade_ends: tuple[str, str] = ("", ""),
    width: int = 900,
    height: int = 420,
    log_x: bool | None = None,
    log_y: bool | None = None,
    x_unit: float = 1.0,
    title: str = "",
) -> Html:
    """Points on two axes, coloured by a third value (legend: `shade_label`, its ends `shade_ends`). Linear axes
    start at zero; an axis whose values span more than 20× turns logarithmic. `x_unit`: ticks on round numbers of
    it (1024**2 for MB)."""
    if not points:
        return Html('<p class="muted">nothing to draw: no candidate has both a size and a speed</p>')
    left, right, top, bottom = 78, 24, 28 if title else 12, 70
    x = Axis([p.x for p in points], left, width - right, log=log_x, unit=x_unit)
    y = Axis([p.y for p in points], height - bottom, top, log=log_y)
    out = [_open(width, height, title or f"{y_label} against {x_label}")]
    if title:
        out.append(f'<text x="{left}" y="18" font-size="14" font-weight="600" fill="#1f2933">{esc(title)}</text>')
    out += _grid(x, y, x_format, y_format, top, height - bottom, left, width - right)
    out.append(
        f'<text x="{(left + width - right) / 2:.0f}" y="{height - bottom + 38}" text-anchor="middle" '
        f'font-size="12" fill="#3e4c59">{esc(x_label)}{" (log scale)" if x.log else ""}</text>'
    )
    mid = (top + height - bottom) / 2
    out.append(
        f'<text transform="translate(16 {mid:.0f}) rotate(-90)" text-anchor="middle" font-size="12" '
        f'fill="#3e4c59">{esc(y_label)}{" (log scale)" if y.log else ""}</text>'
    )
    placed: list[tuple[float, float, float, float]] = []
    for p in sorted(points, key=lambda p: (not p.hollow, p.shade is not None)):  # qualified ones drawn on top
        cx, cy = x.at(p.x), y.at(p.y)
        colour = shade_colour(p.shade)
        fill = "#ffffff" if p.hollow else colour
        tip = esc(
            f"{p.label}: {x_label} {x_format(p.x)}, {y_label} {y_format(p.y)}" + (f"; {p.note}" if p.note else "")
        )
        out.append(
            f'<g><title>{tip}</title><circle cx="{cx:.1f}" cy="{cy:.1f}" r="9" fill="{fill}" '
            f'stroke="{colour if p.hollow else "#243b53"}" stroke-width="{2 if p.hollow else 1}"/>'
        )
        if p.mark:
            ink = "#243b53" if p.hollow else "#ffffff"
            out.append(
                f'<text x="{cx:.1f}" y="{cy + 4:.1f}" text-anchor="middle" font-size="10" font-weight="700" '
                f'fill="{ink}">{esc(p.mark)}</text>'
            )
        out.append(_label(p.label, cx, cy, width - right, placed, p.hollow) + "</g>")
    if shade_label:
        out.append(_legend(width - right - 250, height - 22, shade_label, shade_ends))
    out.append("</svg>")
    return Html("".join(out))


def _open(width: int, height: int, name: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{esc(name)}" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" style="max-width:100%;height:auto">'
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>'
    )


def _grid(x: Axis, y: Axis, fx: Format, fy: Format, top: float, base: float, left: float, end: float) -> list[str]:
    out = []
    for t in x.ticks():
        px = x.at(t)
        out.append(f'<line x1="{px:.1f}" y1="{top}" x2="{px:.1f}" y2="{base}" stroke="#e4e7eb"/>')
        out.append(
            f'<text x="{px:.1f}" y="{base + 16}" text-anchor="middle" font-size="11" fill="#616e7c">{esc(fx(t))}</text>'
        )
    for t in y.ticks():
        py = y.at(t)
        out.append(f'<line x1="{left}" y1="{py:.1f}" x2="{end}" y2="{py:.1f}" stroke="#e4e7eb"/>')
        out.append(
            f'<text x="{left - 6}" y="{py + 4:.1f}" text-anchor="end" font-size="11" fill="#616e7c">{esc(fy(t))}</text>'
        )
    out.append(f'<rect x="{left}" y="{top}" width="{end - left}" height="{base - top}" fill="none" stroke="#9aa5b1"/>')
    return out


def _label(
    text: str, cx: float, cy: float, limit: float, placed: list[tuple[float, float, float, float]], dim: bool
) -> str:
    """The point's name beside it, moved down a line at a time while it would overlap one already placed."""
    w, h = 6.2 * len(text), 12.0
    x0 = cx + 13 if cx + 13 + w <= limit else cx - 13 - w
    y0 = cy - h / 2
    for _ in range(6):
        if not any(x0 < bx + bw and bx < x0 + w and y0 < by + bh and by < y0 + h for bx, by, bw, bh in placed):
            break
        y0 += h + 1
    placed.append((x0, y0, w, h))
    ink = "#7b8794" if dim else "#1f2933"
    return f'<text x="{x0:.1f}" y="{y0 + 10:.1f}" font-size="11" fill="{ink}">{esc(text)}</text>'


def _legend(x: float, y: float, label: str, ends: tuple[str, str]) -> str:
    gid = f"shade{next(_ids)}"
    stops = "".join(f'<stop offset="{u:.2f}" stop-color="{shade_colour(u)}"/>' for u in (0.0, 0.25, 0.5, 0.75, 1.0))
    return (
        f'<defs><linearGradient id="{gid}">{stops}</linearGradient></defs>'
        f'<text x="{x - 8}" y="{y + 9}" text-anchor="end" font-size="11" fill="#3e4c59">{esc(label)}</text>'
        f'<rect x="{x}" y="{y}" width="120" height="10" fill="url(#{gid})" stroke="#9aa5b1"/>'
        f'<text x="{x}" y="{y + 22}" font-size="10" fill="#616e7c">{esc(ends[0])}</text>'
        f'<text x="{x + 120}" y="{y + 22}" text-anchor="end" font-size="10" fill="#616e7c">{esc(ends[1])}</text>'
        f'<circle cx="{x + 150}" cy="{y + 5}" r="5" fill="#ffffff" stroke="{NEUTRAL}" stroke-width="2"/>'
        f'<text x="{x + 159}" y="{y + 9}" font-size="11" fill="#3e4c59">did not qualify</text>'
    )


def bars(rows: Sequence[Bar], *, width: int = 560, label_width: int = 200, title: str = "") -> Html:
    """One horizontal bar a row, longest = the largest value, the number at its end."""
    if not rows:
        return Html('<p class="muted">nothing yet</p>')
    row_h, top = 24, 26 if title else 4
    height = top + row_h * len(rows) + 4
    scale = max(r.value for r in rows) or 1.0
    span = width - label_width - 12 - TEXT_PX * max(len(r.text or _number(r.value)) for r in rows)
    out = [_open(width, height, title or "bar chart")]
    if title:
        out.append(f'<text x="0" y="16" font-size="13" font-weight="600" fill="#1f2933">{esc(title)}</text>')
    for i, r in enumerate(rows):
        y0 = top + i * row_h
        length = max(1.0, span * r.value / scale) if r.value > 0 else 0.0
        tip = esc(f"{r.label}: {r.text or _number(r.value)}" + (f"; {r.note}" if r.note else ""))
        out.append(
            f"<g><title>{tip}</title>{_row_label(r.label, label_width, y0)}"
            f'<rect x="{label_width}" y="{y0 + 4}" width="{length:.1f}" height="{row_h - 8}" rx="2" fill="{r.colour}"/>'
            f'<text x="{label_width + length + 6:.1f}" y="{y0 + 15}" font-size="12" fill="#3e4c59">'
            f"{esc(r.text or _number(r.value))}</text></g>"
        )
    out.append("</svg>")
    return Html("".join(out))


def stacked(
    rows: Sequence[tuple[str, Sequence[Bar]]], *, total_format: Format, width: int = 720, label_width: int = 200
) -> Html:
    """One bar a row, made of parts, all rows on one scale (comparable); the legend names the parts once."""
    if not rows:
        return Html('<p class="muted">nothing to draw</p>')
    totals = [sum(p.value for p in parts) for _, parts in rows]
    row_h, scale = 26, max(totals) or 1.0
    span = width - label_width - 12 - TEXT_PX * max(len(total_format(t)) for t in totals)
    legend = list(dict.fromkeys((p.label, p.colour) for _, parts in rows for p in parts))
    per_line = max(1, int(width // 150))
    height = row_h * len(rows) + 10 + 18 * ((len(legend) + per_line - 1) // per_line)
    out = [_open(width, height, "stacked bar chart")]
    for i, ((label, parts), total) in enumerate(zip(rows, totals, strict=True)):
        y0, x0 = i * row_h, float(label_width)
        out.append(_row_label(label, label_width, y0))
        for p in parts:
            w = span * p.value / scale
            tip = esc(f"{label}, {p.label}: {p.text or _number(p.value)}")
            out.append(
                f'<g><title>{tip}</title><rect x="{x0:.1f}" y="{y0 + 5}" width="{w:.1f}" height="{row_h - 10}" '
                f'fill="{p.colour}"/></g>'
            )
            x0 += w
        out.append(
            f'<text x="{x0 + 6:.1f}" y="{y0 + 17}" font-size="12" fill="#3e4c59">{esc(total_format(total))}</text>'
        )
    base = row_h * len(rows) + 18
    for i, (name, colour) in enumerate(legend):
        lx, ly = (i % per_line) * 150, base + 18 * (i // per_line)
        out.append(
            f'<rect x="{lx}" y="{ly - 9}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{lx + 14}" y="{ly}" font-size="11" fill="#3e4c59">{esc(name)}</text>'
        )
    out.append("</svg>")
    return Html("".join(out))


def _row_label(text: str, label_width: int, y0: float) -> str:
    return (
        f'<text x="{label_width - 8}" y="{y0 + 15}" text-anchor="end" font-size="12" fill="#1f2933">'
        f"{esc(_clip(text, label_width))}</text>"
    )


def meter(parts: Sequence[Bar], total: float, *, total_text: str, width: int = 560, title: str = "") -> Html:
    """`parts` side by side in one bar whose full length is `total` (a budget); past it, the bar runs red."""
    used = sum(p.value for p in parts)
    full = max(total, used) or 1.0
    span, top = width - 2, 22 if title else 2
    height = top + 30 + 18 * ((len(parts) + 2) // 3)
    out = [_open(width, height, title or "meter")]
    if title:
        out.append(f'<text x="0" y="14" font-size="13" font-weight="600" fill="#1f2933">{esc(title)}</text>')
    out.append(f'<rect x="1" y="{top}" width="{span}" height="18" fill="#f0f4f8" stroke="#9aa5b1"/>')
    x0 = 1.0
    for p in parts:
        w = span * p.value / full
        tip = esc(f"{p.label}: {p.text or _number(p.value)}" + (f"; {p.note}" if p.note else ""))
        out.append(
            f'<g><title>{tip}</title><rect x="{x0:.1f}" y="{top}" width="{w:.1f}" height="18" fill="{p.colour}"/></g>'
        )
        x0 += w
    if total and used > total:
        at = 1 + span * total / full
        out.append(
            f'<line x1="{at:.1f}" y1="{top - 3}" x2="{at:.1f}" y2="{top + 21}" stroke="#d73027" stroke-width="2"/>'
        )
    for i, p in enumerate(parts):
        lx, ly = 1 + (i % 3) * (width / 3), top + 36 + 18 * (i // 3)
        out.append(
            f'<rect x="{lx:.0f}" y="{ly - 9}" width="10" height="10" fill="{p.colour}"/>'
            f'<text x="{lx + 14:.0f}" y="{ly}" font-size="11" fill="#3e4c59">'
            f"{esc(_clip(p.label, width / 3 - 90))} {esc(p.text or _number(p.value))}</text>"
        )
    out.append(f"<title>{esc(total_text)}</title></svg>")
    return Html("".join(out))


def _clip(text: str, pixels: float) -> str:
    most = max(4, int(pixels / 6.5))
    return text if len(text) <= most else text[: most - 1] + "…"


def _number(v: float) -> str:
    return f"{v:,.0f}" if float(v).is_integer() else f"{v:.3g}"
