"""What a flash would do, before it does it: the bundle, each target's steps, and whether it fits there."""

from __future__ import annotations

from dataclasses import dataclass

from edge_sdk.apps.flash.targets import Scheme, Target
from edge_sdk.bundle import Bundle, FitReport


@dataclass(frozen=True)
class TargetPlan:
    target: Target
    steps: tuple[str, ...]
    fit: tuple[tuple[str, FitReport], ...]  # (variant id, report) against the target's profile; empty: no profile

    @property
    def fits(self) -> bool | None:
        """Whether at least one variant fits the target's profile; None when the target names no profile."""
        return any(report.fits for _, report in self.fit) if self.fit else None


def fit_reports(bundle: Bundle, profile_ref: str) -> tuple[tuple[str, FitReport], ...]:
    """Each variant against a profile: the report recorded at conversion when there is one, else estimated now
    from the bundle's own files (so an LLM's KV cache comes from its GGUF header), without timing anything."""
    from device_profiles import load_profile
    from edge_sdk.fitting import fit

    profile = load_profile(profile_ref)
    reports = {}
    for v in bundle.variants:
        reports[v.id] = v.fit.get(profile.id) or fit(bundle, profile_ref, variant=v.id, measure=False)[v.id]
    return tuple(reports.items())


def plan_target(
    bundle: Bundle,
    target: Target,
    *,
    activate: bool,
    health_url: str | None,
    trusted: int,
    device_check: bool,
) -> TargetPlan:
    name, version = bundle.name, bundle.manifest.version
    incoming = target.incoming
    where = "copy (resuming a partial copy if one is there)"
    steps = [
        f"{where} to {incoming}/ on {'the mounted card' if target.scheme is Scheme.DIR else target.host}",
        "verify every file's digest"
        + (f" and the signature against {trusted} trusted key(s)" if trusted else "")
        + (" and re-run the golden set" if device_check else "")
        + (" on the device" if target.scheme is Scheme.SSH else " on this machine"),
        f"install {name} {version} into the store {target.store} as a new version"
        + ("" if activate else " (not activated)"),
    ]
    if activate:
        steps.append(f"activate {name} {version} (the active version becomes previous)")
    if health_url:
        steps.append(f"GET {health_url} from the board until 2xx; on failure roll back to the previous version")
    fit = fit_reports(bundle, target.profile) if target.profile else ()
    return TargetPlan(target, tuple(steps), fit)
