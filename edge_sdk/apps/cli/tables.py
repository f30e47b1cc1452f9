"""Tables that more than one command shows."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge_sdk.apps.cli.common import human_bytes

if TYPE_CHECKING:
    from rich.table import Table

    from edge_sdk.bundle import Bundle


def variant_table(bundle: Bundle) -> Table:
    """One row per variant: size, precision, measured accuracy, and fit per profile."""
    from rich.table import Table

    table = Table(title=f"{bundle.name} {bundle.manifest.version} — {len(bundle.variants)} variant(s)")
    for col in ("variant", "size", "precision", "accuracy vs reference", "gate", "fit"):
        table.add_column(col)
    for v in bundle.variants:
        acc = v.accuracy
        names = ("accuracy", "top1_agreement", "neighbour_agreement", "cosine_mean", "max_rel_error")
        metric = next((m for m in map(acc.metric, names) if m is not None), None) if acc else None
        if acc and metric:
            shown = f"{metric.name} {metric.value:.4f}" + (f" (ref {metric.reference:.4f})" if metric.reference else "")
        else:
            shown = "-"
        gate = "-" if acc is None else ("[green]pass[/]" if acc.passed else "[red]FAIL[/]")
        fit = ", ".join(
            f"{pid}: {'[green]fits[/]' if r.fits else '[red]no[/]'} ({human_bytes(r.estimated_peak_bytes)} "
            f"of {human_bytes(r.budget_bytes)})"
            for pid, r in v.fit.items()
        )
        precision = v.recipe.precision
        if v.recipe.pruning_ratio:
            before, after = v.recipe.options.get("parameters_before"), v.recipe.options.get("parameters_after")
            precision += f"; pruned {v.recipe.pruning_ratio:.0%} ({before} -> {after} parameters)"
        if "sparsity_effect" in v.recipe.options:
            precision += f"; {v.recipe.options['sparsity_effect']}"
        share = v.recipe.options.get("delegated_share_flops")
        if share is not None:  # silent fallback to slow kernels is what burns users: show it
            precision += f"; {float(share):.1%} of compute in {v.recipe.options.get('delegate', 'delegate')}"
        table.add_row(v.id, human_bytes(v.size_bytes), precision, shown, gate, fit or "-")
    return table
