"""`edge-sdk inspect BUNDLE --html FILE`: a bundle's variants, their accuracy against the reference and where
the memory goes, as one page."""

from __future__ import annotations

from typing import TYPE_CHECKING

from device_profiles.fit import human as size
from edge_sdk.apps.pages.html import Html, badge, document, esc, join, pairs, paragraph, section, table
from edge_sdk.apps.pages.svg import PALETTE, Bar, bars, stacked

if TYPE_CHECKING:
    from edge_sdk.bundle import Bundle, Variant
    from edge_sdk.bundle.manifest import Metric

# The order the memory parts are drawn in (device_profiles.estimate's names); others follow.
PARTS = ("python", "engine", "weights", "repacked_weights", "kv_cache", "activations")
PART_COLOUR = dict(zip(PARTS, ("#829ab1", "#9c36b5", "#1f6feb", "#4dabf7", "#e8590c", "#2f9e44"), strict=True))


def bundle_report(bundle: Bundle) -> str:
    m = bundle.manifest
    subtitle = f"task {m.task.value} · {len(m.variants)} variant(s) · schema {m.schema_version} · {m.created_by}"
    source = pairs(
        [
            ("source", f"{m.source.kind} {m.source.description}".strip()),
            ("source digest", m.source.digest),
            ("labels", ", ".join(m.labels) or None),
            (
                "tokenizer",
                f"{m.preprocessing.kind}, up to {m.preprocessing.max_length} tokens" if m.preprocessing else None,
            ),
        ]
    )
    content: list[object] = [
        section("Bundle", source, id="bundle"),
        _variants(bundle),
        _accuracy(bundle),
        _memory(bundle),
    ]
    if m.failed:
        rows = [[f.id, f.backend.value, f.quantization.value, f.stage, f.error] for f in m.failed]
        content.append(
            section(
                "Variants that could not be built",
                table(["variant", "engine", "quantization", "stage", "error"], rows),
                id="failed",
            )
        )
    content += [_details(v) for v in m.variants]
    return document(f"{m.name} {m.version}", content, subtitle=subtitle)


def headline(v: Variant) -> Metric | None:
    """The metric a user judges the variant by (as the CLI's variant table)."""
    acc = v.accuracy
    names = ("accuracy", "top1_agreement", "neighbour_agreement", "cosine_mean", "max_rel_error")
    return next((found for found in map(acc.metric, names) if found is not None), None) if acc else None


def _variants(bundle: Bundle) -> Html:
    rows = []
    for v in bundle.variants:
        metric = headline(v)
        gate = None if v.accuracy is None else (badge("pass", "ok") if v.accuracy.passed else badge("FAIL", "bad"))
        fit = join(
            [
                join(
                    [
                        pid,
                        ": ",
                        badge("fits", "ok") if r.fits else badge("no", "bad"),
                        f" {size(r.estimated_peak_bytes)} of {size(r.budget_bytes)}",
                    ]
                )
                for pid, r in v.fit.items()
            ],
            "<br>",
        )
        precision = v.recipe.precision + (f", pruned {v.recipe.pruning_ratio:.0%}" if v.recipe.pruning_ratio else "")
        rows.append(
            [
                Html(f"<code>{esc(v.id)}</code>"),
                v.backend.value,
                precision,
                size(v.size_bytes),
                _metric_text(metric) if metric else None,
                gate,
                fit or None,
            ]
        )
    headers = ["variant", "engine", "precision", "size", "accuracy vs reference", "gate", "fit"]
    return section("Variants", table(headers, rows, numeric=(3,)), id="variants")


def _metric_text(metric: Metric) -> str:
    ref = f" (reference {metric.reference:.4g})" if metric.reference is not None else ""
    return f"{metric.name} {metric.value:.4g}{ref}"


def _accuracy(bundle: Bundle) -> Html:
    """The headline metric of every variant, side by side; a failed gate in red."""
    shown = [(v, headline(v)) for v in bundle.variants]
    rows = [
        Bar(
            v.id,
            metric.value,
            f"{metric.value:.4g} {metric.name}",
            PALETTE[1] if metric.passed else "#d73027",
            note=f"tolerance {metric.tolerance:.3g}"
            + (f", reference {metric.reference:.4g}" if metric.reference else ""),
        )
        for v, metric in shown
        if metric is not None
    ]
    if not rows:
        return section("Accuracy", paragraph("no variant carries an accuracy report", muted=True), id="accuracy")
    return section("Accuracy", bars(rows, width=720, label_width=220), id="accuracy")


def _memory(bundle: Bundle) -> Html:
    """Each variant's estimated peak by part, all on one scale: what a smaller variant saves, and where."""
    rows = [(label, parts) for v in bundle.variants for label, parts in _breakdowns(v, bundle)]
    if not rows:
        return section("Memory at peak", paragraph("no memory estimate", muted=True), id="memory")
    names = sorted({k for _, parts in rows for k in parts}, key=_part_order)
    chart = stacked(
        [(label, [Bar(k, parts[k], size(parts[k]), _colour(k)) for k in sorted(parts, key=_part_order)])
         for label, parts in rows],
        total_format=lambda total: size(total),
    )  # fmt: skip
    table_rows = [[label, *(size(parts[k]) if k in parts else None for k in names), size(sum(parts.values()))]
                  for label, parts in rows]  # fmt: skip
    budgets = {pid: r.budget_bytes for v in bundle.variants for pid, r in v.fit.items()}
    note = "; ".join(f"{pid}: {size(b)} for models" for pid, b in budgets.items())
    return section(
        "Memory at peak",
        chart,
        table(["variant", *names, "peak"], table_rows, numeric=range(1, len(names) + 2)),
        paragraph(f"budgets: {note}" if note else "estimated for this host: the bundle names no target", muted=True),
        id="memory",
    )


def _breakdowns(v: Variant, bundle: Bundle) -> list[tuple[str, dict[str, int]]]:
    """The variant's breakdown per target (targets with the same one share a row), else estimated here."""
    groups: dict[tuple[tuple[str, int], ...], list[str]] = {}
    for pid, r in v.fit.items():
        parts = r.breakdown or {"peak": r.estimated_peak_bytes}
        groups.setdefault(tuple(sorted(parts.items())), []).append(pid)
    if not groups:
        estimate = _host_estimate(v, bundle)
        return [(f"{v.id} (estimate)", estimate)] if estimate else []
    if len(groups) == 1:
        return [(v.id, dict(next(iter(groups))))]
    return [(f"{v.id} on {', '.join(pids)}", dict(key)) for key, pids in groups.items()]


def _part_order(name: str) -> tuple[int, str]:
    return (PARTS.index(name) if name in PARTS else len(PARTS), name)


def _colour(name: str) -> str:
    return PART_COLOUR.get(name, PALETTE[sum(map(ord, name)) % len(PALETTE)])


def _host_estimate(v: Variant, bundle: Bundle) -> dict[str, int]:
    from device_profiles.estimate import ModelFacts, estimate_memory
    from edge_sdk.errors import EdgeSDKError

    try:
        return dict(estimate_memory(ModelFacts.of_variant(v, bundle.root)).parts)
    except EdgeSDKError:
        return {}


def _details(v: Variant) -> Html:
    items: list[tuple[str, object]] = [
        ("needs", f"{v.runtime.package} {v.runtime.version} (extra [{v.runtime.extra}])")
    ]
    items += [("input", s.describe()) for s in v.inputs] + [("output", s.describe()) for s in v.outputs]
    items += [("file", f"{f.path} · {size(f.size)} · sha256 {f.sha256[:12]}…") for f in v.files]
    items += [(f"recipe.{k}", value) for k, value in v.recipe.options.items()]
    content: list[object] = [pairs(items)]
    if v.accuracy:
        rows = [
            [
                m.name,
                f"{m.value:.5g}",
                None if m.reference is None else f"{m.reference:.5g}",
                f"{m.tolerance:.3g}",
                "higher" if m.higher_is_better else "lower",
                badge("ok", "ok") if m.passed else badge("FAIL", "bad"),
            ]
            for m in v.accuracy.metrics
        ]
        where = f" · measured on {v.accuracy.measured_on}" if v.accuracy.measured_on else ""
        content += [
            paragraph(f"against {v.accuracy.reference} on {v.accuracy.samples} sample(s){where}", muted=True),
            table(["metric", "value", "reference", "tolerance", "better", "verdict"], rows, numeric=(1, 2, 3)),
        ]
    for pid, r in v.fit.items():
        if r.reasons or r.suggestions:
            content.append(paragraph(f"fit {pid}: " + "; ".join([*r.reasons, *r.suggestions])))
    return section(f"{v.id} ({v.backend.value})", *content, id=f"variant-{v.id}")
