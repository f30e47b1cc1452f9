"""Staged rollouts: a bundle version opened to a growing share of a device group, gated on device health.

A rollout of MODEL VERSION to GROUP walks its stages (e.g. 5, 25, 100 % of the group). The devices of a stage
are the group's devices seen within `seen_within_s`, ranked by a stable hash of (model, device id), the first
ceil(share × count) of them (at least one), plus every device that was already given the version. While a
rollout runs, the version is offered (listed and downloadable) only to those devices.

A device of the stage counts healthy when, since the stage opened, it reported (telemetry) the version active,
its daemon ready, and its error rate and cloud-fallback rate within bounds; one that has not reported once
`stage_wait_s` has passed counts unhealthy. The next stage opens when the healthy share meets `min_healthy`;
when it cannot be met any more (or the wait is over), the rollout aborts, the version is withdrawn from the
group, and devices running it roll back on their next sync. Every decision is stored and returned, so the
gateway logs and counts it.

The state lives in the gateway's database (SQLite beside the registry, or PostgreSQL); the decision rules are
pure functions over plain data.
"""

from __future__ import annotations

import builtins
import hashlib
import itertools
import json
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from cloud_sync.database import Database, Transaction, open_database
from edge_sdk.errors import RegistryError, choices

Clock = Callable[[], float]

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


class RolloutConflictError(RolloutError):
    """Another active rollout of the same model to the same group."""


class RolloutNotFoundError(RolloutError):
    """No rollout with that id."""


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


@dataclass(frozen=True)
class Decision:
    rollout: int
    model: str
    group: str
    action: str  # start, advance, complete, abort, pause, resume, wait
    stage_percent: int
    reason: str
    at: float


@dataclass(frozen=True)
class Listing:
    """What the registry shows one device: visible entries' keys, and versions withdrawn from it."""

    hidden: frozenset[tuple[str, str]]
    withdrawn: tuple[dict[str, str], ...] = field(default_factory=tuple)


# ---------------------------------------------------------------------------------------------- pure rules
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


# ---------------------------------------------------------------------------------------------- the store
_SCHEMA = [
    """
    CREATE TABLE IF NOT EXISTS devices (id TEXT PRIMARY KEY, groups TEXT, last_seen REAL);
    CREATE TABLE IF NOT EXISTS given (
        device TEXT NOT NULL, model TEXT NOT NULL, version TEXT NOT NULL, at REAL NOT NULL,
        PRIMARY KEY (device, model, version));
    CREATE TABLE IF NOT EXISTS reports (
        device TEXT NOT NULL, model TEXT NOT NULL, version TEXT NOT NULL, first_at REAL NOT NULL,
        last_at REAL NOT NULL, ready INTEGER NOT NULL, base TEXT NOT NULL, last TEXT NOT NULL,
        PRIMARY KEY (device, model, version));
    CREATE TABLE IF NOT EXISTS rollouts (id INTEGER PRIMARY KEY AUTOINCREMENT, record TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS decisions (
        id INTEGER PRIMARY KEY AUTOINCREMENT, rollout INTEGER NOT NULL, at REAL NOT NULL, action TEXT NOT NULL,
        stage_percent INTEGER NOT NULL, reason TEXT NOT NULL)
    """
]
_LOCK = "rollouts"  # one writer of rollout state at a time, across gateway replicas


class Rollouts:
    """Rollouts, device groups, what each device was given and reported; decisions taken on `evaluate`.

    `groups` are the device groups of the key file (device id -> groups); `set_groups` overrides them per
    device. `clock` is injectable so tests walk through stage waits without waiting.
    """

    def __init__(
        self,
        database: Database | str | Path,
        *,
        groups: Mapping[str, Sequence[str]],
        clock: Clock = time.time,
        seen_write_interval_s: float = 30.0,
    ) -> None:
        self.clock = clock
        self._groups = {device: tuple(g) for device, g in groups.items()}
        self._seen_interval = seen_write_interval_s
        self._seen_cache: dict[str, float] = {}
        self._owned = not hasattr(database, "transaction")
        self.db: Database = open_database(database) if self._owned else database  # type: ignore[assignment,arg-type]
        self.db.migrate("rollouts", _SCHEMA)

    def close(self) -> None:
        if self._owned:
            self.db.close()

    # ------------------------------------------------------------------------------------------ devices
    def devices(self) -> builtins.list[str]:
        return sorted(self._groups)

    def groups_of(self, device: str) -> tuple[str, ...]:
        with self.db.transaction() as tx:
            return self._groups_of(tx, device)

    def set_groups(self, device: str, groups: Sequence[str]) -> tuple[str, ...]:
        if device not in self._groups:
            raise RolloutNotFoundError(f"no device {device!r}; devices: {choices(self.devices())}")
        clean = tuple(sorted(set(groups)))
        with self.db.transaction(_LOCK) as tx:
            tx.execute(
                "INSERT INTO devices (id, groups) VALUES (?, ?) "
                "ON CONFLICT (id) DO UPDATE SET groups = excluded.groups",
                (device, json.dumps(clean)),
            )
        return clean

    def due(self, device: str) -> bool:
        """Whether a call of `device` should be written down (at most every `seen_write_interval_s`)."""
        return self.clock() - self._seen_cache.get(device, -math.inf) >= self._seen_interval

    def seen(self, device: str) -> None:
        """Record that a device called."""
        now = self.clock()
        self._seen_cache[device] = now
        with self.db.transaction() as tx:  # a plain upsert: no check-then-write, no lock needed
            tx.execute(
                "INSERT INTO devices (id, last_seen) VALUES (?, ?) "
                "ON CONFLICT (id) DO UPDATE SET last_seen = excluded.last_seen",
                (device, now),
            )

    def fleet(self) -> builtins.list[dict[str, Any]]:
        """Every known device with its groups and when it was last seen."""
        with self.db.transaction() as tx:
            seen = self._last_seen(tx)
            return [{"id": d, "groups": list(self._groups_of(tx, d)), "last_seen": seen.get(d)} for d in self.devices()]

    # ------------------------------------------------------------------------------------------ rollouts
    def start(self, spec: RolloutSpec, published: Sequence[tuple[str, str]]) -> tuple[Rollout, Decision]:
        """Open a rollout at its first stage; `published` are the registry's (name, version) pairs."""
        spec.check()
        if (spec.model, spec.version) not in published:
            versions = sorted(v for n, v in published if n == spec.model)
            where = (
                f"published versions of {spec.model}: {choices(versions)}"
                if versions
                else (f"published models: {choices(sorted({n for n, _ in published})) or 'none'}")
            )
            raise RolloutError(f"{spec.model} {spec.version} is not in the registry; {where}")
        now = self.clock()
        with self.db.transaction(_LOCK) as tx:
            known_groups = {g for d in self.devices() for g in self._groups_of(tx, d)}
            if spec.group not in known_groups:
                groups = choices(sorted(known_groups)) or "none"
                raise RolloutError(f"no device is in group {spec.group!r}; groups: {groups}")
            for other in self._all(tx):
                if other.state in ACTIVE_STATES and other.spec.model == spec.model and other.spec.group == spec.group:
                    raise RolloutConflictError(
                        f"rollout {other.id} of {spec.model} {other.spec.version} to group {spec.group!r} is "
                        f"{other.state.value}: finish, or abort it (`edge-sdk cloud rollouts abort {other.id}`) first"
                    )
            reason = f"opened {spec.stages[0]}% of group {spec.group!r}"
            draft = Rollout(0, spec, RolloutState.RUNNING, 0, now, now, now, reason)
            (row,) = tx.execute("INSERT INTO rollouts (record) VALUES (?) RETURNING id", (json.dumps(draft.to_json()),))
            rollout = replace(draft, id=int(row[0]))
            self._write(tx, rollout)
            decision = self._decided(tx, rollout, "start", reason, now)
        return rollout, decision

    def get(self, rollout_id: int) -> Rollout:
        with self.db.transaction() as tx:
            return self._get(tx, rollout_id)

    def list(self) -> builtins.list[Rollout]:
        with self.db.transaction() as tx:
            return self._all(tx)

    def decisions(self, rollout_id: int) -> builtins.list[dict[str, Any]]:
        with self.db.transaction() as tx:
            rows = tx.execute(
                "SELECT at, action, stage_percent, reason FROM decisions WHERE rollout = ? ORDER BY id",
                (rollout_id,),
            )
        return [{"at": at, "action": a, "stage_percent": p, "reason": r} for at, a, p, r in rows]

    def control(self, rollout_id: int, action: str, reason: str = "") -> tuple[Rollout, Decision]:
        """Pause, resume or abort by hand."""
        allowed = {
            "pause": (RolloutState.RUNNING,),
            "resume": (RolloutState.PAUSED,),
            "abort": ACTIVE_STATES,
        }
        if action not in allowed:
            raise RolloutError(f"unknown action {action!r}; actions: {choices(sorted(allowed))}")
        now = self.clock()
        with self.db.transaction(_LOCK) as tx:
            rollout = self._get(tx, rollout_id)
            if rollout.state not in allowed[action]:
                states = " or ".join(s.value for s in allowed[action])
                raise RolloutError(
                    f"rollout {rollout_id} is {rollout.state.value}; only a {states} rollout can {action}"
                )
            why = reason or f"{action}d by hand"
            if action == "pause":
                updated = replace(rollout, state=RolloutState.PAUSED, reason=why)
            elif action == "resume":  # the stage's wait starts again: paused time is not counted against devices
                updated = replace(rollout, state=RolloutState.RUNNING, stage_opened_at=now, reason=why)
            else:
                updated = replace(rollout, state=RolloutState.ABORTED, reason=why)
            updated = replace(updated, updated_at=now)
            self._write(tx, updated)
            decision = self._decided(tx, updated, action, why, now)
        return updated, decision

    def evaluate(self) -> builtins.list[Decision]:
        """Take the due decision of every running rollout; returns the decisions that changed something."""
        now = self.clock()
        taken = []
        with self.db.transaction(_LOCK) as tx:
            for rollout in self._all(tx):
                if rollout.state is not RolloutState.RUNNING:
                    continue
                members = self._members(tx, rollout, now)
                reports = self._reports(tx, rollout.spec.model, rollout.spec.version)
                action, updated = decide(rollout, members, reports, now)
                updated = replace(updated, updated_at=now)
                self._write(tx, updated)
                if action != "wait":
                    taken.append(self._decided(tx, updated, action, updated.reason, now))
        return taken

    # ------------------------------------------------------------------------------------------ what devices see
    def listing(self, device: str, entries: Iterable[tuple[str, str]]) -> Listing:
        """Which of the registry's (name, version) pairs `device` may not see, and what is withdrawn from it."""
        now = self.clock()
        with self.db.transaction() as tx:
            rollouts = self._all(tx)
            groups = set(self._groups_of(tx, device))
            hidden, withdrawn = set(), []
            for name, version in entries:
                mine = [r for r in rollouts if (r.spec.model, r.spec.version) == (name, version)]
                if not mine:
                    continue
                if not any(self._offers(tx, r, device, groups, now) for r in mine):
                    hidden.add((name, version))
                for r in mine:
                    if r.state is RolloutState.ABORTED and r.spec.group in groups:
                        why = f"rollout {r.id} aborted: {r.reason}"
                        withdrawn.append({"name": name, "version": version, "reason": why})
        return Listing(frozenset(hidden), tuple(withdrawn))

    def offered(self, device: str, name: str, version: str) -> bool:
        return (name, version) not in self.listing(device, [(name, version)]).hidden

    def given(self, device: str, name: str, version: str) -> None:
        """Record a download of a version under rollout: the device is part of that rollout from now on."""
        with self.db.transaction() as tx:
            tx.execute(
                "INSERT INTO given VALUES (?, ?, ?, ?) ON CONFLICT (device, model, version) DO NOTHING",
                (device, name, version, self.clock()),
            )

    def report(self, device: str, items: Sequence[Mapping[str, Any]]) -> builtins.list[str]:
        """Take a device's telemetry snapshots; returns problems (a version it was not given), not stored."""
        now, problems = self.clock(), []
        with self.db.transaction(_LOCK) as tx:
            rollouts = self._all(tx)
            for item in items:
                models = item.get("models")
                if not isinstance(models, Mapping):
                    continue
                counts = counters_of(item)
                ready = bool(item.get("ready", True))
                for name, version in models.items():
                    if not isinstance(version, str):
                        continue
                    under = [r for r in rollouts if (r.spec.model, r.spec.version) == (name, version)]
                    if under and not self._was_given(tx, device, name, version):
                        problems.append(
                            f"device {device!r} reports {name} {version}, which no rollout gave it "
                            f"(rollout {', '.join(str(r.id) for r in under)}): not counted as healthy"
                        )
                        continue
                    self._record(tx, device, name, version, ready, counts, now)
        return problems

    # ------------------------------------------------------------------------------------------ internals
    def _groups_of(self, tx: Transaction, device: str) -> tuple[str, ...]:
        rows = tx.execute("SELECT groups FROM devices WHERE id = ?", (device,))
        if rows and rows[0][0] is not None:
            return tuple(json.loads(rows[0][0]))
        return self._groups.get(device, ())

    def _last_seen(self, tx: Transaction) -> dict[str, float]:
        rows = tx.execute("SELECT id, last_seen FROM devices WHERE last_seen IS NOT NULL")
        return {device: float(at) for device, at in rows}

    def _get(self, tx: Transaction, rollout_id: int) -> Rollout:
        rows = tx.execute("SELECT record FROM rollouts WHERE id = ?", (rollout_id,))
        if not rows:
            ids = [r.id for r in self._all(tx)]
            raise RolloutNotFoundError(f"no rollout {rollout_id}; rollouts: {choices(ids) or 'none'}")
        return _from_json(json.loads(rows[0][0]))

    def _offers(self, tx: Transaction, rollout: Rollout, device: str, groups: set[str], now: float) -> bool:
        if rollout.spec.group not in groups:
            return False
        if rollout.state is RolloutState.COMPLETED:
            return True
        if rollout.state is RolloutState.ABORTED:
            return False
        return device in self._members(tx, rollout, now)

    def _members(self, tx: Transaction, rollout: Rollout, now: float) -> set[str]:
        spec = rollout.spec
        in_group = [d for d in self.devices() if spec.group in self._groups_of(tx, d)]
        seen = self._last_seen(tx)
        recent = [d for d in in_group if now - seen.get(d, -math.inf) <= spec.seen_within_s]
        rows = tx.execute("SELECT device FROM given WHERE model = ? AND version = ?", (spec.model, spec.version))
        given = [d for (d,) in rows if d in in_group]
        return stage_members(spec.model, recent, rollout.share, given)

    def _was_given(self, tx: Transaction, device: str, name: str, version: str) -> bool:
        sql = "SELECT 1 FROM given WHERE device = ? AND model = ? AND version = ?"
        return bool(tx.execute(sql, (device, name, version)))

    def _reports(self, tx: Transaction, model: str, version: str) -> dict[str, DeviceReport]:
        rows = tx.execute(
            "SELECT device, first_at, last_at, ready, base, last FROM reports WHERE model = ? AND version = ?",
            (model, version),
        )
        return {
            device: DeviceReport(device, model, version, first, last_at, bool(ready), _triple(base), _triple(last))
            for device, first, last_at, ready, base, last in rows
        }

    def _record(
        self,
        tx: Transaction,
        device: str,
        name: str,
        version: str,
        ready: bool,
        counts: tuple[float, float, float],
        now: float,
    ) -> None:
        rows = tx.execute(
            "SELECT base, last FROM reports WHERE device = ? AND model = ? AND version = ?", (device, name, version)
        )
        if rows:
            base, last = _triple(rows[0][0]), _triple(rows[0][1])
        else:  # the first report of this version: count from the device's last report of the one before it
            before = tx.execute(
                "SELECT last FROM reports WHERE device = ? AND model = ? AND version != ? ORDER BY last_at DESC",
                (device, name, version),
            )
            base = last = _triple(before[0][0]) if before else (0.0, 0.0, 0.0)
        if any(now_c < last_c for now_c, last_c in zip(counts, last, strict=True)):
            base = (0.0, 0.0, 0.0)  # the daemon restarted: its counters count from zero again
        tx.execute(
            "INSERT INTO reports VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (device, model, version) DO UPDATE SET "
            "last_at = excluded.last_at, ready = excluded.ready, base = excluded.base, last = excluded.last",
            (device, name, version, now, now, int(ready), json.dumps(list(base)), json.dumps(list(counts))),
        )

    def _all(self, tx: Transaction) -> builtins.list[Rollout]:
        return [_from_json(json.loads(r)) for (r,) in tx.execute("SELECT record FROM rollouts ORDER BY id")]

    def _write(self, tx: Transaction, rollout: Rollout) -> None:
        tx.execute("UPDATE rollouts SET record = ? WHERE id = ?", (json.dumps(rollout.to_json()), rollout.id))

    def _decided(self, tx: Transaction, rollout: Rollout, action: str, reason: str, now: float) -> Decision:
        tx.execute(
            "INSERT INTO decisions (rollout, at, action, stage_percent, reason) VALUES (?, ?, ?, ?, ?)",
            (rollout.id, now, action, rollout.share, reason),
        )
        return Decision(rollout.id, rollout.spec.model, rollout.spec.group, action, rollout.share, reason, now)


def _triple(text: str) -> tuple[float, float, float]:
    a, b, c = json.loads(text)
    return float(a), float(b), float(c)


def _from_json(data: Mapping[str, Any]) -> Rollout:
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
