"""Dominated plan candidates: a candidate that cannot beat an already-measured one on any objective is not
measured further.

Right after its export a candidate's size is exact and its predicted latency is one timing away; only its
accuracy (the costly part: the evaluation set, and an accuracy-aware search when it misses the bound) is unknown.
The plan judges accuracy by its drop from the source, never below 0, so a measured candidate with no drop, a
smaller file and a latency no worse (at the two significant digits ranking uses) wins on every objective —
latency, size, accuracy — whatever the new one's accuracy turns out to be: the new one is recorded as dominated
with its size, its latency and the candidate that dominates it.
"""

from __future__ import annotations

from collections.abc import Iterable

from converters.plan_types import Candidate, speed_key


def dominating(size_bytes: int, latency_ms: float | None, measured: Iterable[Candidate]) -> Candidate | None:
    """A ranked candidate that a new one of this size and latency cannot beat on any objective, if any."""
    for c in measured:
        if c.status != "ranked" or c.accuracy_drop is None or c.accuracy_drop > 0 or c.size_bytes is None:
            continue
        if c.latency_ms is None or latency_ms is None:
            continue  # no latency to compare: it might be faster
        if c.size_bytes < size_bytes and speed_key(c.latency_ms) <= speed_key(latency_ms):
            return c
    return None


def dominated_reason(winner: Candidate, size_bytes: int, latency_ms: float) -> str:
    tie = " (the same at ranking's two digits)" if speed_key(winner.latency_ms) == speed_key(latency_ms) else ""
    return (
        f"dominated by {winner.id}: no accuracy drop, {winner.size_bytes} bytes and {winner.latency_ms:.3g} ms "
        f"against {size_bytes} bytes and {latency_ms:.3g} ms{tie}; it cannot rank above it by latency, size or "
        "accuracy, so its accuracy was not measured"
    )
