"""Staged rollouts: a bundle version opened to a growing share of a device group, gated on device health.

A rollout of MODEL VERSION to GROUP walks its stages (e.g. 5, 25, 100 % of the group). While it runs, the
version is offered (listed and downloadable) only to the devices of its current stage; who they are, whether
they are healthy and what happens next are the pure rules of `cloud_sync.rollout_rules`. When a rollout
aborts, the version is withdrawn from the group, and devices running it roll back on their next sync. Every
decision is stored and returned, so the gateway logs and counts it. A version published with `--hold` is
offered to no device until a rollout opens it; one published without is open to every device until then.

This module is the store: rollouts, device groups, what each device was given and reported, and the
decisions, in the gateway's database (SQLite beside the registry, or PostgreSQL).
"""

from __future__ import annotations

import builtins
import json
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cloud_sync.database import Database, Transaction, open_database
from cloud_sync.rollout_rules import (
    ACTIVE_STATES,
    DeviceReport,
    Rollout,
    RolloutError,
    RolloutSpec,
    RolloutState,
    counters_of,
    decide,
    rollout_from_json,
    stage_members,
)
from edge_sdk.errors import choices

Clock = Callable[[], float]


class RolloutConflictError(RolloutError):
    """Another active rollout of the same model to the same group."""


class RolloutNotFoundError(RolloutError):
    """No rollout with that id."""


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
    """,
    # 2: versions published with --hold: offered to no device until a rollout opens them
    "CREATE TABLE IF NOT EXISTS held (model TEXT NOT NULL, version TEXT NOT NULL, at REAL NOT NULL, "
    "PRIMARY KEY (model, version))",
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
        with self.db.transaction() as tx:  # most calls (each telemetry batch) find nothing running: no lock then
            if not any(r.state is RolloutState.RUNNING for r in self._all(tx)):
                return []
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
            held = self._held(tx)
            hidden, withdrawn = set(), []
            for name, version in entries:
                mine = [r for r in rollouts if (r.spec.model, r.spec.version) == (name, version)]
                if not mine:
                    if (name, version) in held:
                        hidden.add((name, version))
                    continue
                if not any(self._offers(tx, r, device, groups, now) for r in mine):
                    hidden.add((name, version))
                for r in mine:
                    if r.state is RolloutState.ABORTED and r.spec.group in groups:
                        why = f"rollout {r.id} aborted: {r.reason}"
                        withdrawn.append({"name": name, "version": version, "reason": why})
        return Listing(frozenset(hidden), tuple(withdrawn))

    def hold(self, name: str, version: str) -> None:
        """Offer a published version to no device until a rollout opens it (then to the rollout's devices)."""
        with self.db.transaction() as tx:
            sql = "INSERT INTO held VALUES (?, ?, ?) ON CONFLICT (model, version) DO NOTHING"
            tx.execute(sql, (name, version, self.clock()))

    def held(self) -> builtins.list[tuple[str, str]]:
        """The (name, version) pairs published with --hold."""
        with self.db.transaction() as tx:
            return sorted(self._held(tx))

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
        # only this device's reports are read and written: its own lock, so devices do not queue on each other
        with self.db.transaction(f"{_LOCK}:report:{device}") as tx:
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

    def _held(self, tx: Transaction) -> set[tuple[str, str]]:
        return {(name, version) for name, version in tx.execute("SELECT model, version FROM held")}

    def _get(self, tx: Transaction, rollout_id: int) -> Rollout:
        rows = tx.execute("SELECT record FROM rollouts WHERE id = ?", (rollout_id,))
        if not rows:
            ids = [r.id for r in self._all(tx)]
            raise RolloutNotFoundError(f"no rollout {rollout_id}; rollouts: {choices(ids) or 'none'}")
        return rollout_from_json(json.loads(rows[0][0]))

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
        return [rollout_from_json(json.loads(r)) for (r,) in tx.execute("SELECT record FROM rollouts ORDER BY id")]

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
