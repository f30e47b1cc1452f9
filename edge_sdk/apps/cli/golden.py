"""Re-running golden sets from the CLI: shared by `verify --run` and `install`."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from rich.markup import escape

from edge_sdk.apps.cli.common import console
from edge_sdk.bundle import Bundle

_MARKS = {
    "ok": "[green]ok[/]",
    "fail": "[red]FAIL[/]",
    "allowed": "[yellow]allowed[/]",
    "skip": "[dim]skip[/]",
    "failed_at_conversion": "[red]FAILED at conversion[/]",
}


@dataclass(frozen=True)
class GoldenResult:
    """One variant's verdict: ok, fail, allowed (failed at conversion, accepted), skip, failed_at_conversion."""

    variant: str
    result: str
    detail: str
    samples: int | None = None

    @property
    def passed(self) -> bool:
        return self.result in ("ok", "allowed", "skip")

    def as_json(self) -> dict[str, object]:
        return asdict(self) | {"passed": self.passed}


def golden_results(bundle: Bundle, *, allow_failed: bool = False) -> list[GoldenResult]:
    """Run every variant's golden set with this machine's engines.

    Variants without a golden set (language models, whose quality was measured at conversion on KL and
    perplexity) are skipped rather than failed. A variant whose accuracy gate failed at conversion
    (kept with --allow-failed) fails here too, whatever its golden set says, unless `allow_failed`.
    Records of variants that failed to build come first (nothing to run, but the user should know).
    """
    import edge_sdk
    from converters.verify import summary

    results = [
        GoldenResult(record.id, "failed_at_conversion", f"({record.stage}): {record.error}")
        for record in bundle.manifest.failed
    ]
    for v in bundle.variants:
        if v.accuracy is not None and not v.accuracy.passed:
            verdict = "allowed" if allow_failed else "fail"
            detail = f"FAILED at conversion (its accuracy gate): {summary(v.accuracy)}"
            results.append(GoldenResult(v.id, verdict, detail))
        elif v.golden_outputs is None or bundle.manifest.golden is None:
            results.append(GoldenResult(v.id, "skip", "no golden set (its quality report was measured at conversion)"))
        else:
            report = edge_sdk.check_golden(bundle, v.id)
            results.append(
                GoldenResult(v.id, "ok" if report.passed else "fail", summary(report), samples=report.samples)
            )
    return results


def check_golden_sets(bundle: Bundle, *, allow_failed: bool = False) -> bool:
    """`golden_results`, one printed line each; True if all pass (a variant that failed to build does not count)."""
    passed = True
    for r in golden_results(bundle, allow_failed=allow_failed):
        mark = _MARKS[r.result]
        if r.result == "failed_at_conversion":
            console.print(f"{mark} {r.variant} {escape(r.detail)}")
            continue
        if r.samples is not None:
            console.print(f"{mark} {r.variant} golden set ({r.samples} samples): {escape(r.detail)}", highlight=False)
        else:
            console.print(f"{mark} {r.variant}: {escape(r.detail)}", highlight=False)
        passed &= r.passed
    return passed
