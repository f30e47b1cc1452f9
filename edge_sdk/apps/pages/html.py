"""The HTML every page shares: escaping, the document frame with its stylesheet, tables and small pieces.

Text is escaped where it enters (`esc`); a fragment already rendered is wrapped in `Html` so that it is not
escaped twice. Pages are plain documents: they read well printed, saved, or opened from a file.
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Iterable, Sequence


class Html(str):
    """A fragment of markup: inserted as is, where a plain str would be escaped."""


Cell = object  # a str (escaped), an Html fragment, a number, or None (shown as a dash)

STYLE = """
:root { color-scheme: light; --ink: #1f2933; --muted: #616e7c; --line: #d9e2ec; --bg: #f5f7fa; --accent: #1f6feb; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: var(--ink); background: var(--bg); }
header { background: #102a43; color: #f0f4f8; padding: 14px 24px; }
header h1 { margin: 0; font-size: 20px; font-weight: 600; }
header p { margin: 2px 0 0; color: #bcccdc; font-size: 13px; }
main { padding: 16px 24px 32px; max-width: 1280px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 12px 16px; margin: 0 0 16px; }
section h2 { margin: 0 0 8px; font-size: 16px; font-weight: 600; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(380px, 1fr)); gap: 16px; margin: 0 0 16px; }
.grid section { margin: 0; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { color: var(--muted); font-weight: 600; white-space: nowrap; }
td strong { white-space: nowrap; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.dim td { color: var(--muted); }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 4px 16px; margin: 0; }
dt { color: var(--muted); } dd { margin: 0; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; font-weight: 600; }
.ok { background: #d3f9d8; color: #1b5e20; } .warn { background: #fff3bf; color: #7a5b00; }
.bad { background: #ffe3e3; color: #a61e1e; } .info { background: #e7f0ff; color: #1c4587; }
.muted { color: var(--muted); } .small { font-size: 12px; }
code { font: 12px ui-monospace, "DejaVu Sans Mono", monospace; white-space: nowrap; }
form.key { display: flex; gap: 8px; margin-top: 8px; }
form.key input { flex: 1; max-width: 420px; padding: 6px 8px; font: inherit; border: 1px solid #9fb3c8;
                 border-radius: 4px; }
form.key button { padding: 6px 14px; font: inherit; border: 0; border-radius: 4px; background: var(--accent);
                  color: #fff; }
svg text { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
footer { color: var(--muted); font-size: 12px; padding: 0 24px 24px; }
"""


def esc(value: object) -> Html:
    """`value` as text in HTML: an Html fragment as is, None as a dash, anything else escaped."""
    if isinstance(value, Html):
        return value
    if value is None:
        return Html("&ndash;")
    return Html(html.escape(str(value), quote=True))


def join(parts: Iterable[object], sep: str = "") -> Html:
    return Html(sep.join(esc(p) for p in parts))


def document(title: str, body: Iterable[object], *, subtitle: str = "", refresh_s: int | None = None) -> str:
    """A whole page. With `refresh_s` the browser reloads it that often (no script: a meta refresh)."""
    refresh = f'<meta http-equiv="refresh" content="{int(refresh_s)}">' if refresh_s else ""
    made = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    sub = f"<p>{esc(subtitle)}</p>" if subtitle else ""
    again = f" · refreshes every {int(refresh_s)} s" if refresh_s else ""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'{refresh}<link rel="icon" href="data:,">'  # no favicon request: the page is all there is
        f"<title>{esc(title)}</title><style>{STYLE}</style></head>"
        f"<body><header><h1>{esc(title)}</h1>{sub}</header><main>{join(body)}</main>"
        f"<footer>made {made}{again}</footer></body></html>\n"
    )


def section(title: str, *content: object, id: str | None = None) -> Html:
    anchor = f' id="{esc(id)}"' if id else ""
    return Html(f"<section{anchor}><h2>{esc(title)}</h2>{join(content)}</section>")


def grid(*sections: object) -> Html:
    """Sections side by side where the window is wide enough."""
    return Html(f'<div class="grid">{join(sections)}</div>')


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[Cell]],
    *,
    numeric: Iterable[int] = (),
    dim: Iterable[int] = (),
    empty: str = "none",
) -> Html:
    """A table; columns in `numeric` align right, rows in `dim` (indexes) are greyed out."""
    right, faint = set(numeric), set(dim)
    head = "".join(f"<th{_num(i, right)}>{esc(h)}</th>" for i, h in enumerate(headers))
    body = []
    for r, row in enumerate(rows):
        cells = "".join(f"<td{_num(i, right)}>{esc(c)}</td>" for i, c in enumerate(row))
        body.append(f'<tr class="dim">{cells}</tr>' if r in faint else f"<tr>{cells}</tr>")
    if not body:
        body.append(f'<tr><td colspan="{len(headers)}" class="muted">{esc(empty)}</td></tr>')
    return Html(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")


def _num(i: int, right: set[int]) -> str:
    return ' class="num"' if i in right else ""


def pairs(items: Iterable[tuple[str, object]]) -> Html:
    """A definition list: label, value."""
    return Html("<dl>" + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in items) + "</dl>")


def badge(text: str, tone: str = "info") -> Html:
    """A coloured label; tone: ok, warn, bad or info."""
    return Html(f'<span class="badge {esc(tone)}">{esc(text)}</span>')


def paragraph(*content: object, muted: bool = False) -> Html:
    opening = '<p class="muted">' if muted else "<p>"
    return Html(f"{opening}{join(content)}</p>")


def ago(seconds: float) -> str:
    """'12 s ago', '3 min ago', '2.5 h ago', '4 d ago'."""
    if seconds < 90:
        return f"{max(0, round(seconds))} s ago"
    if seconds < 5400:
        return f"{round(seconds / 60)} min ago"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h ago"
    return f"{round(seconds / 86400)} d ago"


def when(epoch_s: float) -> str:
    return dt.datetime.fromtimestamp(epoch_s, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
