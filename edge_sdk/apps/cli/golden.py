"""Re-running golden sets from the CLI: shared by `verify --run` and `install`."""

from __future__ import annotations

from rich.markup import escape

from edge_sdk.apps.cli.common import console
from edge_sdk.bundle import Bundle


def check_golden_sets(bundle: Bundle) -> bool:
    """Run every variant's golden set with this machine's engines, print one line each; True if all pass.

    Variants without a golden set (language models, whose quality was measured at conversion on KL and
    perplexity) are named and skipped rather than failed.
    """
    import edge_sdk
    from converters.verify import summary

    passed = True
    for v in bundle.variants:
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
