"""The rules of a staged rollout, as pure functions over plain data (no I/O, no clock): who is in a stage,
whether a device is healthy, and what a running rollout does next. `cloud_sync.rollouts` keeps the state
and calls these.

A stage holds the group's devices seen recently, ranked by a stable hash of (model, device id): the first
ceil(share × count) of them (at least one), plus every device that was already given the version.

A device of the stage counts healthy when, since the stage opened, it reported (telemetry) the version active,
its daemon ready, and its error rate and cloud-fallback rate within bounds; one that has not reported once
`stage_wait_s` has passed counts unhealthy. The next stage opens when the healthy share meets `min_healthy`;
when it cannot be met any more (or the wait is over), the rollout aborts.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from typing import Any

from edge_sdk.errors import RegistryError

DEFAULT_STAGES = (5, 25, 100)
DEFAULT_MIN_HEALTHY = 0.95
DEFAULT_STAGE_WAIT_S = 600.0
DEFAULT_SEEN_WITHIN_S = 24 * 3600.0
# Health bounds from a device's own counters since it took the version: 5xx answers over requests, and cloud
# routes the device did not choose to make (every reason but `caller`) over routed requests.
DEFAULT_MAX_ERROR_RATE = 0.05
DEFAULT_MAX_FALLBACK_RATE = 0.25
MAX_REASONS = 5  # device reasons kept with a decision


class RolloutState(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    ABORTED = "aborted"


ACTIVE_STATES = (RolloutState.RUNNING, RolloutState.PAUSED)


class RolloutError(RegistryError):
    """A rollout request that cannot be carried out (unknown version, overlap, bad stages, wrong state)."""


@dataclass(frozen=True)
class HealthBounds:
    max_error_rate: float = DEFAULT_MAX_ERROR_RATE
    max_fallback_rate: float = DEFAULT_MAX_FALLBACK_RATE


@dataclass(frozen=True)
class RolloutSpec:
    model: str
    version: str
    group: str
    stages: tuple[int, ...] = DEFAULT_STAGES
    min_healthy: float = DEFAULT_MIN_HEALTHY
    stage_wait_s: float = DEFAULT_STAGE_WAIT_S
    seen_within_s: float = DEFAULT_SEEN_WITHIN_S
    bounds: HealthBounds = HealthBounds()

    def check(self) -> None:
        """Refuse a spec that cannot be run, naming what is valid."""
        stages = self.stages
        if not stages:
            raise RolloutError("--stages is empty: give increasing percentages ending at 100, e.g. 5,25,100")
        if any(not 0 < s <= 100 for s in stages):
            raise RolloutError(f"--stages {_stages(stages)}: every stage is a percentage in 1..100")
        if any(b <= a for a, b in itertools.pairwise(stages)):
            raise RolloutError(f"--stages {_stages(stages)}: stages must increase, e.g. 5,25,100")
        if stages[-1] != 100:
            raise RolloutError(f"--stages {_stages(stages)} must end at 100 (the whole group), e.g. 5,25,100")
        if not 0 < self.min_healthy <= 1:
            raise RolloutError(f"--min-healthy {self.min_healthy:g} must be a share in (0, 1], e.g. 95%")
        if self.stage_wait_s <= 0 or self.seen_within_s <= 0:
            raise RolloutError("--stage-wait and --seen-within must be positive durations, e.g. 10m, 24h")
        rates = {"--max-error-rate": self.bounds.max_error_rate, "--max-fallback-rate": self.bounds.max_fallback_rate}
        for name, rate in rates.items():
            if not 0 <= rate <= 1:
                raise RolloutError(f"{name} {rate:g} must be a share in [0, 1], e.g. 5%")
        if not self.group:
            raise RolloutError("a rollout needs a device group (--group)")


def _stages(stages: Sequence[int]) -> str:
    return ",".join(str(s) for s in stages)


@dataclass(frozen=True)
class Rollout:
    id: int
    spec: RolloutSpec
    state: RolloutState
    stage: int  # index into spec.stages
    stage_opened_at: float
    created_at: float
    updated_at: float
    reason: str  # why it is in its state: the last decision
    members: int = 0  # the last evaluation's counts
    healthy: int = 0
    unhealthy: int = 0
    pending: int = 0
    device_reasons: tuple[str, ...] = ()

    @property
    def share(self) -> int:
        return self.spec.stages[self.stage]

    def to_json(self) -> dict[str, Any]:
        spec = asdict(self.spec)
        spec["stages"] = list(self.spec.stages)
        return {
            "id": self.id,
            **spec,
            "state": self.state.value,
            "stage": self.stage,
            "stage_percent": self.share,
            "stage_opened_at": self.stage_opened_at,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "reason": self.reason,
            "members": self.members,
            "healthy": self.healthy,
            "unhealthy": self.unhealthy,
            "pending": self.pending,
            "device_reasons": list(self.device_reasons),
        }


@dataclass(frozen=True)
class DeviceReport:
    """What a device last said about one model version: counters when it first reported it, and now."""

    device: str
    model: str
    version: str
    first_at: float
    last_at: float
    ready: bool
    base: tuple[float, float, float]  # requests, errors, fallbacks at the first report
    last: tuple[float, float, float]


class Health(StrEnum):
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    PENDING = "pending"


def rank(model: str, device: str) -> str:
    """A device's stable place in a model's rollouts: the same across stages, runs and gateway replicas."""
    return hashlib.sha256(f"{model}\0{device}".encode()).hexdigest()


def stage_members(model: str, seen: Iterable[str], share: int, given: Iterable[str]) -> set[str]:
    """The devices of a stage: the first ceil(share %) of the seen ones by rank (at least one), and the given."""
    ranked = sorted(set(seen), key=lambda device: rank(model, device))
    count = min(len(ranked), max(1, math.ceil(len(ranked) * share / 100))) if ranked else 0
    return set(ranked[:count]) | set(given)


def device_health(report: DeviceReport | None, rollout: Rollout, now: float) -> tuple[Health, str]:
    """One member's health in the rollout's current stage, with the reason."""
    spec = rollout.spec
    if report is None or report.last_at < rollout.stage_opened_at:
        if now - rollout.stage_opened_at >= spec.stage_wait_s:
            return Health.UNHEALTHY, f"did not report {spec.model} {spec.version} within the stage wait"
        return Health.PENDING, f"has not reported {spec.model} {spec.version} yet"
    if not report.ready:
        return Health.UNHEALTHY, "its daemon is not ready"
    requests = report.last[0] - report.base[0]
    if requests > 0:
        errors, fallbacks = report.last[1] - report.base[1], report.last[2] - report.base[2]
        if errors / requests > spec.bounds.max_error_rate:
            return Health.UNHEALTHY, (
                f"error rate {errors / requests:.1%} over {requests:g} requests > {spec.bounds.max_error_rate:.1%}"
            )
        if fallbacks / requests > spec.bounds.max_fallback_rate:
            return Health.UNHEALTHY, (
                f"cloud-fallback rate {fallbacks / requests:.1%} over {requests:g} requests "
                f"> {spec.bounds.max_fallback_rate:.1%}"
            )
    return Health.HEALTHY, "healthy"


def decide(rollout: Rollout, members: set[str], reports: Mapping[str, DeviceReport], now: float) -> tuple[str, Rollout]:
    """The next action of a running rollout (wait, advance, complete or abort) and its updated record."""
    spec = rollout.spec
    verdicts = {device: device_health(reports.get(device), rollout, now) for device in sorted(members)}
    healthy = sum(1 for h, _ in verdicts.values() if h is Health.HEALTHY)
    unhealthy = sum(1 for h, _ in verdicts.values() if h is Health.UNHEALTHY)
    reasons = tuple(f"{d}: {why}" for d, (h, why) in verdicts.items() if h is not Health.HEALTHY)[:MAX_REASONS]
    counted = replace(
        rollout,
        members=len(members),
        healthy=healthy,
        unhealthy=unhealthy,
        pending=len(members) - healthy - unhealthy,
        device_reasons=reasons,
    )
    waited = now - rollout.stage_opened_at >= spec.stage_wait_s
    if not members:
        if waited:
            why = f"no device of group {spec.group!r} was seen within {_duration(spec.seen_within_s)}"
            return "abort", replace(counted, state=RolloutState.ABORTED, reason=why)
        return "wait", replace(counted, reason=f"waiting for devices of group {spec.group!r}")
    share = healthy / len(members)
    tally = f"{healthy}/{len(members)} healthy at {rollout.share}%"
    if share >= spec.min_healthy:
        if rollout.stage + 1 == len(spec.stages):
            return "complete", replace(counted, state=RolloutState.COMPLETED, reason=f"{tally}: completed")
        nxt = spec.stages[rollout.stage + 1]
        advanced = replace(counted, stage=rollout.stage + 1, stage_opened_at=now, reason=f"{tally}: opened {nxt}%")
        return "advance", replace(advanced, healthy=0, unhealthy=0, pending=0, device_reasons=())
    best_possible = (len(members) - unhealthy) / len(members)
    if best_possible < spec.min_healthy or waited:
        why = f"{tally}, below --min-healthy {spec.min_healthy:.0%}" + ("" if waited else " (cannot be reached)")
        return "abort", replace(counted, state=RolloutState.ABORTED, reason=why)
    return "wait", replace(counted, reason=f"{tally}; waiting (need {spec.min_healthy:.0%})")


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def counters_of(item: Mapping[str, Any]) -> tuple[float, float, float]:
    """(requests, 5xx errors, cloud fallbacks) from a daemon telemetry snapshot's counters; a device may send
    anything, so what is not shaped as the daemon sends it counts as nothing."""
    counters = item.get("counters") or {}

    def series(name: str) -> list[tuple[Mapping[str, Any], float]]:
        value = counters.get(name) if isinstance(counters, Mapping) else None
        out = []
        for s in value if isinstance(value, list) else []:
            labels = s.get("labels") if isinstance(s, Mapping) else None
            number = s.get("value") if isinstance(s, Mapping) else None
            if isinstance(labels, Mapping) and isinstance(number, int | float) and math.isfinite(number):
                out.append((labels, float(number)))
        return out

    requests = errors = fallbacks = 0.0
    for labels, value in series("edge_route_total"):
        requests += value
        if labels.get("route") == "cloud" and labels.get("reason") != "caller":
            fallbacks += value
    for labels, value in series("edge_requests_total"):
        if str(labels.get("status", "")).startswith("5"):
            errors += value
    return requests, errors, fallbacks


def rollout_from_json(data: Mapping[str, Any]) -> Rollout:
    """The inverse of `Rollout.to_json`."""
    bounds = HealthBounds(data["bounds"]["max_error_rate"], data["bounds"]["max_fallback_rate"])
    spec = RolloutSpec(
        model=data["model"],
        version=data["version"],
        group=data["group"],
        stages=tuple(data["stages"]),
        min_healthy=data["min_healthy"],
        stage_wait_s=data["stage_wait_s"],
        seen_within_s=data["seen_within_s"],
        bounds=bounds,
    )
    return Rollout(
        id=data["id"],
        spec=spec,
        state=RolloutState(data["state"]),
        stage=data["stage"],
        stage_opened_at=data["stage_opened_at"],
        created_at=data["created_at"],
        updated_at=data["updated_at"],
        reason=data["reason"],
        members=data.get("members", 0),
        healthy=data.get("healthy", 0),
        unhealthy=data.get("unhealthy", 0),
        pending=data.get("pending", 0),
        device_reasons=tuple(data.get("device_reasons", ())),
    )
