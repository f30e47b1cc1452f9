"""`edge-sdk plan --html FILE`: the plan as a page: size × speed × accuracy, then the ranked table."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from device_profiles.fit import human as size
from edge_sdk.apps.pages.html import Html, badge, document, esc, paragraph, section, table
from edge_sdk.apps.pages.svg import Point, scatter

if TYPE_CHECKING:
    from converters.plan import Candidate, Plan

STATUS_TEXT = {
    "does-not-fit": "does not fit", "accuracy": "accuracy", "refused": "refused", "ranked": "ranked",
    "dominated": "dominated",
}  # fmt: skip


def plan_report(plan: Plan) -> str:
    r = plan.request
    where = plan.profile_id or r.profile
    ranked = plan.ranked()
    subtitle = (
        f"ranked by {r.objective.value}, accuracy drop ≤ {r.max_accuracy_drop:.2%} · {len(plan.candidates)} "
        f"candidate(s), {len(ranked)} qualify · {plan.created_by}"
    )
    best = (
        paragraph(
            badge("best", "ok"),
            " ",
            Html(f"<strong>{esc(ranked[0].id)}</strong>"),
            f" — {_speed(ranked[0])}, ",
            f"{size(ranked[0].size_bytes or 0)}, {_accuracy(ranked[0])}",
        )
        if ranked
        else paragraph(badge("none qualifies", "bad"), " every candidate was dropped: the table says why")
    )
    return document(
        f"plan for {r.model} on {where}",
        [best, section("Size × speed × accuracy", plan_chart(plan), id="chart"), _table(plan)],
        subtitle=subtitle,
    )


def plan_chart(plan: Plan) -> Html:
    """Each measured candidate: file size across, speed up, accuracy drop as colour; the rank inside."""
    llm = any(c.tokens_per_second for c in plan.candidates)
    limit = plan.request.max_accuracy_drop
    points = []
    for c in plan.candidates:
        speed = c.tokens_per_second if llm else c.latency_ms
        if not c.size_bytes or not speed:
            continue
        drop = c.accuracy_drop
        shade = None if drop is None else (min(1.0, drop / limit) if limit > 0 else float(drop > 0))
        why = "; ".join(c.reasons)
        points.append(
            Point(
                c.size_bytes,
                speed,
                c.id,
                shade,
                note=f"{_accuracy(c)}" + (f"; {why}" if why else ""),
                mark=str(c.rank or ""),
                hollow=c.rank is None,
            )
        )
    return scatter(
        points,
        x_label="file size",
        y_label="decode speed (tokens/s, higher is better)" if llm else "latency per call (ms, lower is better)",
        x_format=lambda v: size(v),
        x_unit=1024.0 ** min(3, int(math.log(max(p.x for p in points), 1024))) if points else 1.0,
        y_format=lambda v: f"{v:.3g}",
        shade_label="accuracy drop",
        shade_ends=("0", f"{limit:.2%} (the bound)"),
    )


def _table(plan: Plan) -> Html:
    order = sorted(plan.candidates, key=lambda c: (c.rank is None, c.rank or 0, c.status, c.id))
    rows, dim = [], []
    for i, c in enumerate(order):
        if c.rank is None:
            dim.append(i)
        status = badge("ranked", "ok") if c.rank else badge(STATUS_TEXT.get(c.status, c.status), "warn")
        rows.append(
            [
                c.rank,
                Html(f"<code>{esc(c.id)}</code>"),
                c.backend.value,
                c.quantization.value,
                f"{c.prune:.0%}" if c.prune else None,
                c.context,
                size(c.size_bytes) if c.size_bytes else None,
                size(c.peak_bytes) if c.peak_bytes else None,
                _speed(c) if (c.latency_ms or c.tokens_per_second) else None,
                _accuracy(c, named=False) if c.accuracy is not None else None,
                status,
                "; ".join(c.reasons) if c.rank is None else "",
            ]
        )
    headers = [
        "rank",
        "candidate",
        "engine",
        "quantization",
        "pruned",
        "context",
        "size",
        "peak memory",
        "speed",
        "accuracy (drop)",
        "status",
        "why not",
    ]
    return section("Candidates, best first", table(headers, rows, numeric=(0, 5, 6, 7, 8), dim=dim), id="ranked")


def _speed(c: Candidate) -> str:
    if c.tokens_per_second:
        return f"{c.tokens_per_second:.1f} tok/s"
    return f"{c.latency_ms:.3g} ms" if c.latency_ms else "-"


def _accuracy(c: Candidate, *, named: bool = True) -> str:
    if c.accuracy is None:
        return "accuracy not measured"
    drop = f"-{c.accuracy_drop:.2%}" if c.accuracy_drop else "no drop"
    return f"{'accuracy ' if named else ''}{c.accuracy:.4f} ({drop})"
