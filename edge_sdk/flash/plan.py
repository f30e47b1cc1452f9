"""What a flash would do, before it does it: the bundle, each target's steps, and whether it fits there."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from edge_sdk.bundle import Bundle, FitReport, Variant
from edge_sdk.flash.targets import Scheme, Target

if TYPE_CHECKING:
    from device_profiles import DeviceProfile


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
    """Each variant against a profile: the report recorded in the bundle when there is one, else estimated now."""
    from device_profiles import load_profile

    profile = load_profile(profile_ref)
    return tuple((v.id, v.fit.get(profile.id) or _estimate(profile, v)) for v in bundle.variants)


def _estimate(profile: DeviceProfile, variant: Variant) -> FitReport:
    # Only the manifest travels with the plan: weights, engine and activations are estimated from it; an LLM's
    # KV cache needs the GGUF header, so a fit recorded at convert time (used first, above) is the better answer.
    from device_profiles.estimate import ModelFacts
    from device_profiles.fit import check_fit

    facts = ModelFacts(
        variant.backend, variant.recipe.quantization, variant.size_bytes, variant.inputs, variant.outputs
    )
    return check_fit(profile, facts)


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
