"""`edge-sdk fit`: will this bundle run on that device? Before anything is copied."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from edge_sdk.apps.cli.common import EXIT_FAILED, console, human_bytes, user_errors

if TYPE_CHECKING:
    from rich.table import Table

    from edge_sdk.bundle import FitReport


def fit_cmd(
    bundle: Path = typer.Argument(..., help="A bundle directory or .edgebundle file."),
    profile: str = typer.Option(
        ..., "--profile", "-p", help="Device profile id (see `edge-sdk profiles list`) or a YAML file."
    ),
    context: int | None = typer.Option(
        None, "--context", help="LLM context length to budget the KV cache for (default: the runtime's, 2048)."
    ),
    variant: str | None = typer.Option(None, "--variant", "-v", help="Check one variant (default: all)."),
    min_tps: float | None = typer.Option(None, "--min-tokens-per-second", help="Refuse LLMs predicted slower."),
    max_latency_ms: float | None = typer.Option(None, "--max-latency-ms", help="Refuse models predicted slower."),
    measure: bool = typer.Option(
        True, "--measure/--no-measure", help="Time tensor variants here (batch 1) to predict their latency there."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the reports as JSON."),
) -> None:
    """Predict peak memory (weights + KV cache + activations + the engine) and speed of each variant on a
    device, and say for each that does not fit why, with numbers and what to try. Exits 1 when none fits."""
    from rich.markup import escape

    import edge_sdk.fitting

    with user_errors():
        reports = edge_sdk.fitting.fit(
            bundle,
            profile,
            context=context,
            variant=variant,
            measure=measure,
            min_tokens_per_second=min_tps,
            max_latency_ms=max_latency_ms,
        )
    if as_json:
        typer.echo(json.dumps({k: r.model_dump(mode="json") for k, r in reports.items()}, indent=2))
    else:
        console.print(fit_table(reports))
        for variant_id, report in reports.items():
            for reason in report.reasons:
                console.print(f"[red]✗[/] {variant_id}: {escape(reason)}", highlight=False)
    if not any(r.fits for r in reports.values()):
        raise typer.Exit(EXIT_FAILED)


def fit_table(reports: dict[str, FitReport]) -> Table:
    from rich.table import Table

    first = next(iter(reports.values()))
    table = Table(title=f"fit on {first.profile} (budget {human_bytes(first.budget_bytes)})")
    for col in ("variant", "fits", "peak memory", "made of", "speed"):
        table.add_column(col)
    for variant_id, r in reports.items():
        parts = " + ".join(
            f"{k.replace('_', ' ')} {human_bytes(v)}" for k, v in sorted(r.breakdown.items(), key=lambda kv: -kv[1])
        )
        if r.predicted_tokens_per_second is not None:
            speed = f"≈{r.predicted_tokens_per_second:.1f} tokens/s"
        elif r.predicted_latency_ms is not None:
            speed = f"≈{r.predicted_latency_ms:.3g} ms / call"
        else:
            speed = "-"
        ctx = f" (context {r.context})" if r.context else ""
        verdict = "[green]yes[/]" if r.fits else "[red]no[/]"
        table.add_row(variant_id, verdict, human_bytes(r.estimated_peak_bytes) + ctx, parts, speed)
    return table
