"""Re-running golden sets from the CLI: shared by `verify --run` and `install`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge_sdk.apps.cli.common import console

if TYPE_CHECKING:
    from edge_sdk.bundle import Bundle


def check_golden_sets(bundle: Bundle, *, allow_failed: bool = False) -> bool:
    """Run every variant's golden set with this machine's engines, print one line each; True if all pass.

    Variants without a golden set (language models, whose quality was measured at conversion on KL and
    perplexity) are named and skipped rather than failed. A variant whose accuracy gate failed at conversion
    (kept with --allow-failed) fails here too, whatever its golden set says, unless `allow_failed`.
    """
    from rich.markup import escape

    import edge_sdk
    from converters.verify import summary

    passed = True
    for record in bundle.manifest.failed:  # never built: nothing to run, but the user should know
        console.print(f"[red]FAILED at conversion[/] {record.id} ({record.stage}): {escape(record.error)}")
    for v in bundle.variants:
        if v.accuracy is not None and not v.accuracy.passed:
            mark = "[yellow]allowed[/]" if allow_failed else "[red]FAIL[/]"
            console.print(
                f"{mark} {v.id}: FAILED at conversion (its accuracy gate): {escape(summary(v.accuracy))}",
                highlight=False,
            )
            passed &= allow_failed
            continue
        if v.golden_outputs is None or bundle.manifest.golden is None:
            console.print(f"[dim]skip[/] {v.id}: no golden set (its quality report was measured at conversion)")
            continue
        report = edge_sdk.check_golden(bundle, v.id)
        mark = "[green]ok[/]" if report.passed else "[red]FAIL[/]"
        console.print(
            f"{mark} {v.id} golden set ({report.samples} samples): {escape(summary(report))}", highlight=False
        )
        passed &= report.passed
    return passed
