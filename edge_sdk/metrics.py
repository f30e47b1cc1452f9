"""A small Prometheus text-format registry: counters, gauges and fixed-bucket histograms."""

from __future__ import annotations

import threading
from collections import defaultdict

LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

Labels = tuple[tuple[str, str], ...]


def _fmt(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{v}"' for k, v in labels) + "}"


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, dict[Labels, float]] = defaultdict(dict)
        self._gauges: dict[str, dict[Labels, float]] = defaultdict(dict)
        self._hist: dict[str, dict[Labels, list[float]]] = defaultdict(dict)
        self._help: dict[str, tuple[str, str]] = {}

    def describe(self, name: str, kind: str, text: str) -> None:
        self._help[name] = (kind, text)

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._counters[name][key] = self._counters[name].get(key, 0.0) + value

    def set(self, name: str, value: float, **labels: str) -> None:
        with self._lock:
            self._gauges[name][tuple(sorted(labels.items()))] = value

    def observe(self, name: str, value: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            # buckets..., +Inf count, sum
            cells = self._hist[name].setdefault(key, [0.0] * (len(LATENCY_BUCKETS) + 2))
            for i, bound in enumerate(LATENCY_BUCKETS):
                if value <= bound:
                    cells[i] += 1
            cells[-2] += 1
            cells[-1] += value

    def counters(self) -> dict[str, list[dict[str, object]]]:
        """Every counter series as JSON (for telemetry): {name: [{"labels": {...}, "value": v}, ...]}."""
        with self._lock:
            return {
                name: [{"labels": dict(k), "value": v} for k, v in sorted(series.items())]
                for name, series in sorted(self._counters.items())
            }

    def series(self, name: str) -> list[tuple[dict[str, str], float]]:
        """One counter's series: (labels, value) pairs."""
        with self._lock:
            return [(dict(k), v) for k, v in sorted(self._counters.get(name, {}).items())]

    def render(self) -> str:
        lines: list[str] = []
        with self._lock:
            for kind, table in (("counter", self._counters), ("gauge", self._gauges)):
                for name, series in sorted(table.items()):
                    lines += self._header(name, kind)
                    lines += [f"{name}{_fmt(k)} {v:g}" for k, v in sorted(series.items())]
            for name, hist in sorted(self._hist.items()):
                lines += self._header(name, "histogram")
                for key, cells in sorted(hist.items()):
                    for bound, count in zip(LATENCY_BUCKETS, cells, strict=False):
                        lines.append(f"{name}_bucket{_fmt((*key, ('le', f'{bound:g}')))} {count:g}")
                    lines.append(f"{name}_bucket{_fmt((*key, ('le', '+Inf')))} {cells[-2]:g}")
                    lines.append(f"{name}_count{_fmt(key)} {cells[-2]:g}")
                    lines.append(f"{name}_sum{_fmt(key)} {cells[-1]:g}")
        return "\n".join(lines) + "\n"

    def _header(self, name: str, kind: str) -> list[str]:
        _, text = self._help.get(name, (kind, name))
        return [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
