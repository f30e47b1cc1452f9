"""fit(): will each variant of a bundle run on a device profile? Memory and speed predicted, reasons given."""

from __future__ import annotations

from pathlib import Path

from edge_sdk.bundle import Bundle, FitReport


def fit(
    bundle: str | Path | Bundle,
    profile: str | Path,
    *,
    context: int | None = None,
    variant: str | None = None,
    measure: bool = True,
    min_tokens_per_second: float | None = None,
    max_latency_ms: float | None = None,
) -> dict[str, FitReport]:
    """One FitReport per variant (or the one named). `measure` times tensor variants here, batch 1, for the
    latency estimate (scaled by the profile's CPU); LLM decode speed comes from the profile's bandwidth.

    Example:
        >>> edge_sdk.fit("smollm2.bundle", "rpi4", context=4096)["gguf-q4_0"]
        FitReport(rpi4: fits, peak 181.3 MiB of 2816.0 MiB)
    """
    from device_profiles import load_profile
    from device_profiles.estimate import ModelFacts
    from device_profiles.fit import check_fit
    from edge_sdk.api import open_bundle
    from runtimes.measure import host_latency

    opened = open_bundle(bundle)
    target = load_profile(profile)
    host = load_profile("host") if measure else None
    golden = opened.golden()
    variants = [opened.variant(variant)] if variant is not None else list(opened.variants)
    reports = {}
    for v in variants:
        facts = ModelFacts.of_variant(v, opened.root)
        golden_inputs = golden.inputs if golden is not None else None
        latency = host_latency(v, opened.root, golden_inputs) if measure and facts.llm is None else None
        reports[v.id] = check_fit(
            target,
            facts,
            context=context,
            host=host,
            host_latency_s=latency,
            min_tokens_per_second=min_tokens_per_second,
            max_latency_ms=max_latency_ms,
        )
    return reports
