"""Time a tensor variant on this machine: the host measurement that fit and plan scale to a device."""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from edge_sdk.bundle import Variant
from edge_sdk.errors import EdgeSDKError

MEASURE_SECONDS = 0.3  # timing budget per variant after one warm-up call


def one_sample(variant: Variant, golden: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """A batch-1 input (or the model's fixed batch): the first golden samples when there are enough, else zeros
    of the declared shape."""
    out = {}
    for spec in variant.inputs:
        axis = spec.sample_axis
        first = spec.shape[axis] if axis is not None else None
        batch = first if isinstance(first, int) else 1  # a model exported with a fixed batch takes only that
        given = golden.get(spec.name) if golden is not None else None
        if given is not None and (axis is None or (spec.samples(given) or 0) >= batch):
            out[spec.name] = spec.take(given, 0, batch)  # an unbatched input (state, scalar) whole
        else:
            shape = [d if isinstance(d, int) else 1 for d in spec.shape]
            out[spec.name] = np.zeros(shape, dtype=spec.dtype.numpy)
    return out


def host_latency(
    variant: Variant,
    root: Path,
    golden: Mapping[str, np.ndarray] | None = None,
    seconds: float = MEASURE_SECONDS,
) -> float | None:
    """Median seconds of one batch-1 call here, or None when the variant's engine is not installed here."""
    from runtimes import get_runtime

    sample = one_sample(variant, golden)
    try:
        session = get_runtime(variant.backend).load(variant, root)
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
