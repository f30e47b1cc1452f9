"""Timing shared by the overhead benchmarks: interleaved rounds, medians, one row format."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def per_call(fn: Callable[[], object], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def interleaved(a: Callable[[], object], b: Callable[[], object], rounds: int, calls: int) -> tuple[float, float]:
    """Median seconds per call of `a` and `b`, alternated round by round so machine noise hits both alike."""
    a_times, b_times = [], []
    for _ in range(rounds):
        a_times.append(per_call(a, calls))
        b_times.append(per_call(b, calls))
    return statistics.median(a_times), statistics.median(b_times)


def overhead_row(engine: str, variant: str, batch: int, rounds: int, calls: int, sdk: float, raw: float) -> dict:
    return {
        "engine": engine,
        "variant": variant,
        "batch": batch,
        "rounds": rounds,
        "calls_per_round": calls,
        "sdk_median_us": sdk * 1e6,
        "direct_median_us": raw * 1e6,
        "ratio_direct_over_sdk": raw / sdk,
    }
