"""Tables that more than one command shows, and the rule every table keeps: the id column is never cut.

An id (variant, candidate, model, target) is what the user types next (`run --variant ID`); on a narrow
terminal the other columns wrap instead, items sit one a line, and the per-profile fit moves to a table of its
own below the variants.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from edge_sdk.apps.cli.common import console, human_bytes

if TYPE_CHECKING:  # rich's tables are imported by the commands that draw one
    from rich.console import RenderableType
    from rich.table import Table

    from edge_sdk.bundle import Bundle, Variant

WIDE_TERMINAL = 120  # the width at which the fit per profile still fits beside the variants


def add_id_column(table: Table, header: str, ids: Iterable[str]) -> None:
    """A column as wide as its longest id, never wrapped or cut (the others give way)."""
    width = max([len(header), *(len(i) for i in ids)])
    table.add_column(header, no_wrap=True, min_width=width, overflow="ignore")


def _accuracy(v: Variant) -> str:
    acc = v.accuracy
    names = ("accuracy", "top1_agreement", "neighbour_agreement", "cosine_mean", "max_rel_error")
    metric = next((m for m in map(acc.metric, names) if m is not None), None) if acc else None
    if not metric:
        return "-"
    return f"{metric.name}\n{metric.value:.4f}" + (f" (ref {metric.reference:.4f})" if metric.reference else "")


def _precision(v: Variant) -> str:
    lines = [v.recipe.precision]
    if v.recipe.pruning_ratio:
        before, after = v.recipe.options.get("parameters_before"), v.recipe.options.get("parameters_after")
        lines.append(f"pruned {v.recipe.pruning_ratio:.0%} ({before} -> {after} parameters)")
    if "sparsity_effect" in v.recipe.options:
        lines.append(v.recipe.options["sparsity_effect"])
    share = v.recipe.options.get("delegated_share_flops")
    if share is not None:  # silent fallback to slow kernels is what burns users: show it
        lines.append(f"{float(share):.1%} of compute in {v.recipe.options.get('delegate', 'delegate')}")
    return "\n".join(lines)


def _fit_cell(v: Variant) -> str:
    return "\n".join(
        f"{pid}: {'[green]fits[/]' if r.fits else '[red]no[/]'} "
        f"({human_bytes(r.estimated_peak_bytes)} of {human_bytes(r.budget_bytes)})"
        for pid, r in v.fit.items()
    )


def variant_table(bundle: Bundle, width: int | None = None) -> RenderableType:
    """One row per variant: size, precision, measured accuracy, gate, and fit per profile (beside them on a wide
    terminal, else in a table of its own)."""
    from rich import box
    from rich.console import Group
    from rich.table import Table

    wide = (width or console.width) >= WIDE_TERMINAL
    table = Table(
        title=f"{bundle.name} {bundle.manifest.version} — {len(bundle.variants)} variant(s)",
        box=box.SIMPLE_HEAVY,
        pad_edge=False,
    )
    add_id_column(table, "variant", (v.id for v in bundle.variants))
    table.add_column("size", no_wrap=True, justify="right")
    table.add_column("precision", overflow="fold")
    table.add_column("accuracy vs reference" if wide else "accuracy", overflow="fold")
    table.add_column("gate", no_wrap=True)
    if wide:
        table.add_column("fit", overflow="fold")
    for v in bundle.variants:
        gate = "-" if v.accuracy is None else ("[green]pass[/]" if v.accuracy.passed else "[red]FAIL[/]")
        row = [v.id, human_bytes(v.size_bytes), _precision(v), _accuracy(v), gate]
        table.add_row(*row, *([_fit_cell(v) or "-"] if wide else []))
    if wide or not any(v.fit for v in bundle.variants):
        return table
    return Group(table, _fit_by_profile(bundle))


def _fit_by_profile(bundle: Bundle) -> Table:
    from rich import box
    from rich.table import Table

    table = Table(title="fit per device profile", box=box.SIMPLE_HEAVY, pad_edge=False)
    add_id_column(table, "variant", (v.id for v in bundle.variants))
    add_id_column(table, "profile", (p for v in bundle.variants for p in v.fit))
    table.add_column("fits", no_wrap=True)
    table.add_column("peak of budget", overflow="fold")
    for v in bundle.variants:
        for pid, r in v.fit.items():
            verdict = "[green]yes[/]" if r.fits else "[red]no[/]"
            table.add_row(v.id, pid, verdict, f"{human_bytes(r.estimated_peak_bytes)} of {human_bytes(r.budget_bytes)}")
    return table
