"""fit(): will each variant of a bundle run on a device profile? Memory and speed predicted, reasons given."""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from edge_sdk.bundle import Bundle, FitReport, Variant
from edge_sdk.errors import EdgeSDKError

MEASURE_SECONDS = 0.3  # timing budget per variant after one warm-up call


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
    latency estimate (scaled by the profile's CPU); LLM decode speed comes from the profile's bandwidth."""
    from device_profiles import load_profile
    from device_profiles.estimate import ModelFacts
    from device_profiles.fit import check_fit
    from edge_sdk.api import open_bundle

    opened = open_bundle(bundle)
    target = load_profile(profile)
    host = load_profile("host") if measure else None
    variants = [opened.variant(variant)] if variant is not None else list(opened.variants)
    reports = {}
    for v in variants:
        facts = ModelFacts.of_files(
            v.backend, v.recipe.quantization, [opened.path_of(f) for f in v.files], v.inputs, v.outputs
        )
        latency = host_latency(opened, v) if measure and facts.llm is None else None
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


def one_sample(variant: Variant, golden: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """A batch-1 input: the first golden sample when there is one, else zeros of the declared shape."""
    out = {}
    for spec in variant.inputs:
        if golden is not None and spec.name in golden:
            out[spec.name] = golden[spec.name][:1]
        else:
            shape = [d if isinstance(d, int) else 1 for d in spec.shape]
            out[spec.name] = np.zeros(shape, dtype=spec.dtype.numpy)
    return out


def host_latency(bundle: Bundle, variant: Variant, seconds: float = MEASURE_SECONDS) -> float | None:
    """Median seconds of one batch-1 call on this machine, or None when its engine is not installed here."""
    from edge_sdk.api import load

    golden = bundle.golden()
    sample = one_sample(variant, golden.inputs if golden is not None else None)
    try:
        session = load(bundle, variant.id)
    except EdgeSDKError:
        return None  # e.g. the engine's extra is not installed on this machine
    with session:
        session.run(sample)  # warm-up: first calls allocate
        times: list[float] = []
        deadline = time.perf_counter() + seconds
        while len(times) < 5 or (time.perf_counter() < deadline and len(times) < 10_000):
            start = time.perf_counter()
            session.run(sample)
            times.append(time.perf_counter() - start)
    return statistics.median(times)
