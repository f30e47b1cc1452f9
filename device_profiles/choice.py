"""Which variant of a bundle a device should run: among those that fit the device's profile and passed their
accuracy gate, the fastest predicted (fewest ms a call, most tokens/s), then the smallest file; or the one the
operator names. The answer says why, so `/v1/models` and the CLI can show it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from device_profiles.estimate import ModelFacts
from device_profiles.fit import check_fit, human
from device_profiles.schema import DeviceProfile
from edge_sdk.bundle import Bundle, FitReport, Variant
from edge_sdk.errors import BundleError, ConfigError, EdgeSDKError, choices


@dataclass(frozen=True)
class Choice:
    variant: Variant
    reason: str


def choose_variant(
    bundle: Bundle, profile: DeviceProfile, *, context: int | None = None, pinned: str | None = None
) -> Choice:
    """The variant to serve on `profile` (`pinned`: the operator's choice, checked to exist)."""
    if pinned is not None:
        ids = [v.id for v in bundle.variants]
        if pinned not in ids:
            raise BundleError(f"bundle {bundle.name!r} has no variant {pinned!r}; variants: {choices(ids)}")
        return Choice(bundle.variant(pinned), "chosen by the operator (--variant)")
    if len(bundle.variants) == 1:
        return Choice(bundle.variants[0], "the bundle's only variant")
    fits: list[tuple[Variant, FitReport]] = []
    refused: list[str] = []
    for variant in bundle.variants:
        if variant.accuracy is not None and not variant.accuracy.passed:
            refused.append(f"{variant.id}: failed its accuracy gate")
            continue
        report = _fit(variant, bundle.root, profile, context)
        if report is None or report.fits:
            fits.append((variant, report or _unknown(profile)))
        else:
            first = report.reasons[0] if report.reasons else "does not fit"
            refused.append(f"{variant.id}: {first.split(': try ')[0].split(': no smaller')[0]}")  # no suggestions
    if not fits:
        raise ConfigError(
            f"no variant of {bundle.name!r} fits {profile.id} and passed its gate: {'; '.join(refused)}. "
            "Name one with --variant, or serve on a bigger device."
        )
    order = {v.id: i for i, v in enumerate(bundle.variants)}
    ranked = sorted(fits, key=lambda vf: (*_speed_key(vf[0], vf[1], profile.id), vf[0].size_bytes, order[vf[0].id]))
    best, report = ranked[0]
    why = [f"best for {profile.id} of {len(fits)} that fit and passed their gate"]
    if report.estimated_peak_bytes:
        why.append(f"needs {human(report.estimated_peak_bytes)} of {human(profile.budget_bytes)}")
    speed = _speed_text(best, report, profile.id)
    why.append(speed or f"smallest file ({human(best.size_bytes)})")
    if refused:
        why.append("not: " + "; ".join(refused))
    return Choice(best, ", ".join(why))


def _fit(variant: Variant, root: Path, profile: DeviceProfile, context: int | None) -> FitReport | None:
    try:
        facts = ModelFacts.of_variant(variant, root)
        return check_fit(profile, facts, context=context if facts.llm is not None else None)
    except EdgeSDKError:  # a header the estimate cannot read: judged by what it is, not excluded
        return None


def _unknown(profile: DeviceProfile) -> FitReport:
    return FitReport(profile=profile.id, fits=True, estimated_peak_bytes=0, budget_bytes=profile.budget_bytes)


def _latency_ms(variant: Variant, report: FitReport, profile_id: str) -> float | None:
    """A tensor model's latency is timed on the converting host and scaled: the bundle records it per profile."""
    if report.predicted_latency_ms:
        return report.predicted_latency_ms
    recorded = variant.fit.get(profile_id)
    return recorded.predicted_latency_ms if recorded is not None else None


def _speed_key(variant: Variant, report: FitReport, profile_id: str) -> tuple[float]:
    """Two significant digits, as the planner ranks: timing noise must not reorder near-ties."""
    if report.predicted_tokens_per_second:
        return (float(f"{1e3 / report.predicted_tokens_per_second:.2g}"),)
    latency = _latency_ms(variant, report, profile_id)
    return (float(f"{latency:.2g}") if latency else math.inf,)


def _speed_text(variant: Variant, report: FitReport, profile_id: str) -> str | None:
    if report.predicted_tokens_per_second:
        return f"fastest predicted (≈{report.predicted_tokens_per_second:.0f} tokens/s)"
    latency = _latency_ms(variant, report, profile_id)
    return f"fastest predicted (≈{latency:.2g} ms a call)" if latency else None
