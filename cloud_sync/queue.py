"""The durable offline queue: work that may wait for the cloud (jobs, telemetry), kept in SQLite.

Every write is committed with `synchronous=FULL`, so an enqueue that returned survives SIGKILL and power
loss. One row an item, unique by idempotency key: enqueueing a key again returns the item already there.

    queued ──claim──► delivering ──► done | failed        (failed: the cloud refused it, error kept)
      ▲                   │
      └──── retry ────────┘  (later, with backoff; an item left `delivering` by a killed process
                              goes back to queued when the queue is opened again)
    queued ──TTL──► expired         queued telemetry ──cap, drop-oldest──► dropped

Rows that reach an end state are kept (with their result or error) for `GET /v1/jobs/{id}`, for one TTL
after they ended; then `purge_finished` deletes them. A pending item is never deleted. Delivery is
at-least-once on the wire; the receiver's idempotency store makes it exactly-once.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloud_sync.queue_states import CapPolicy, ItemKind, ItemState
from edge_sdk.errors import ConfigError, IdempotencyKeyReusedError, QueueFullError, QueueLockedError, UnknownItemError
from edge_sdk.fsutil import try_flock

__all__ = ["CapPolicy", "ItemKind", "ItemState", "OfflineQueue", "Outcome", "QueueItem"]


DELIVERING = ItemState.DELIVERING.value
PENDING = (ItemState.QUEUED.value, DELIVERING)


@dataclass(frozen=True)
class Outcome:
    """How one delivery attempt ended: DONE, FAILED, or QUEUED again after `delay_s`."""

    item_id: str
    state: ItemState
    status: int | None = None
    result: Any = None
    error: str | None = None
    delay_s: float = 0.0


@dataclass(frozen=True)
class QueueItem:
    id: str
    kind: ItemKind
    idempotency_key: str
    endpoint: str
    body: dict[str, Any]
    state: ItemState
    attempts: int
    created_at: float
    expires_at: float
    next_attempt_at: float
    updated_at: float
    status: int | None
    result: Any
    error: str | None

    def public(self) -> dict[str, Any]:
        """The JSON a client sees (`GET /v1/jobs/{id}`)."""
        return {
            "id": self.id,
            "object": self.kind.value,
            "state": self.state.value,
            "endpoint": self.endpoint,
            "idempotency_key": self.idempotency_key,
            "attempts": self.attempts,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "updated_at": self.updated_at,
            "next_attempt_at": self.next_attempt_at if self.state is ItemState.QUEUED else None,
            "status_code": self.status,
            "result": self.result,
            "error": self.error,
        }


_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE,
    endpoint TEXT NOT NULL,
    body TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    next_attempt_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    status INTEGER,
    result TEXT,
    error TEXT
);
CREATE INDEX IF NOT EXISTS items_due ON items (state, next_attempt_at);
"""

_COLUMNS = (
    "id, kind, idempotency_key, endpoint, body, state, attempts, created_at, expires_at, next_attempt_at, "
    "updated_at, status, result, error"
)


def _canonical(body: dict[str, Any]) -> str:
    return json.dumps(body, sort_keys=True, separators=(",", ":"))


class OfflineQueue:
    """A SQLite file owned by one process at a time (an flock beside it; the kernel drops it on SIGKILL)."""

    def __init__(
        self,
        path: Path,
        *,
        max_items: int = 10_000,
        ttl_s: float = 7 * 24 * 3600.0,
        telemetry_policy: CapPolicy = CapPolicy.DROP_OLDEST,
    ) -> None:
        if max_items <= 0 or ttl_s <= 0:
            raise ConfigError(f"queue max_items and ttl_s must be > 0, got {max_items} and {ttl_s}")
        self.path, self.max_items, self.ttl_s = Path(path), max_items, ttl_s
        self.telemetry_policy = CapPolicy(telemetry_policy)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        if not try_flock(self._lock_fd):
            os.close(self._lock_fd)
            raise QueueLockedError(f"queue {str(self.path)!r} is in use by another process") from None
        self._mutex = threading.Lock()
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # an acknowledged commit is on disk
        self._db.executescript(_SCHEMA)
        self.recovered = self._recover()

    def close(self) -> None:
        with self._mutex:
            self._db.close()
            os.close(self._lock_fd)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._mutex:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _recover(self) -> int:
        """Items a killed process left `delivering` go back to queued: they may or may not have arrived."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE items SET state = ?, next_attempt_at = ?, updated_at = ? WHERE state = ?",
                (ItemState.QUEUED.value, 0.0, time.time(), ItemState.DELIVERING.value),
            )
            return cur.rowcount

    def enqueue(
        self,
        kind: ItemKind,
        endpoint: str,
        body: dict[str, Any],
        *,
        idempotency_key: str | None = None,
        ttl_s: float | None = None,
    ) -> tuple[QueueItem, bool]:
        """Store an item durably; returns (item, created). A known key returns the existing item."""
        kind = ItemKind(kind)
        key = idempotency_key or f"{kind.value}-{uuid.uuid4().hex}"
        text = _canonical(body)
        now = time.time()
        with self._tx() as db:
            row = db.execute(f"SELECT {_COLUMNS} FROM items WHERE idempotency_key = ?", (key,)).fetchone()
            if row is not None:
                existing = _item(row)
                if existing.endpoint != endpoint or _canonical(existing.body) != text:
                    raise IdempotencyKeyReusedError(
                        f"idempotency key {key!r} is already used by {existing.kind.value} {existing.id} "
                        f"for a different request; use a new key for a new request"
                    )
                return existing, False
            self._make_room(db, kind)
            item_id = f"{'job' if kind is ItemKind.JOB else 'tel'}_{uuid.uuid4().hex}"
            expires = now + (ttl_s if ttl_s is not None else self.ttl_s)
            db.execute(
                f"INSERT INTO items ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?, NULL, NULL, NULL)",
                (item_id, kind.value, key, endpoint, text, ItemState.QUEUED.value, now, expires, now, now),
            )
            row = db.execute(f"SELECT {_COLUMNS} FROM items WHERE id = ?", (item_id,)).fetchone()
        return _item(row), True

    def _make_room(self, db: sqlite3.Connection, kind: ItemKind) -> None:
        (pending,) = db.execute(f"SELECT COUNT(*) FROM items WHERE state IN {PENDING}").fetchone()
        if pending < self.max_items:
            return
        # Droppable telemetry gives way to a new item of either kind: a queue filled by snapshots while offline
        # must still accept jobs.
        if self.telemetry_policy is CapPolicy.DROP_OLDEST:
            oldest = db.execute(
                "SELECT seq FROM items WHERE kind = ? AND state = ? ORDER BY seq LIMIT 1",
                (ItemKind.TELEMETRY.value, ItemState.QUEUED.value),
            ).fetchone()
            if oldest is not None:
                db.execute(
                    "UPDATE items SET state = ?, error = ?, updated_at = ? WHERE seq = ?",
                    (ItemState.DROPPED.value, f"dropped: queue full ({self.max_items} items)", time.time(), oldest[0]),
                )
                return
        policy = CapPolicy.REJECT_NEW if kind is ItemKind.JOB else self.telemetry_policy
        raise QueueFullError(
            f"the offline queue is full: {pending} items waiting, cap {self.max_items} "
            f"(policy for {kind.value} items: {policy.value}; raise --queue-max-items or wait for delivery)"
        )

    def get(self, item_id: str) -> QueueItem:
        with self._mutex:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM items WHERE id = ?", (item_id,)).fetchone()
        if row is None:
            raise UnknownItemError(f"no job or telemetry item with id {item_id!r} in this queue")
        return _item(row)

    def list_items(
        self,
        kind: ItemKind,
        *,
        states: frozenset[ItemState] | None = None,
        limit: int = 20,
        after: str | None = None,
    ) -> tuple[list[QueueItem], bool]:
        """Items of one kind, newest first, optionally only in `states`; `after` is the id of the last item of the
        previous page. Returns (page, whether more follow). An unknown `after` raises UnknownItemError."""
        where, args = ["kind = ?"], [ItemKind(kind).value]
        if states:
            where.append(f"state IN ({','.join('?' * len(states))})")
            args += sorted(s.value for s in states)
        with self._mutex:
            if after is not None:
                row = self._db.execute("SELECT seq FROM items WHERE id = ?", (after,)).fetchone()
                if row is None:
                    raise UnknownItemError(f"no item with id {after!r} in this queue to page after")
                where.append("seq < ?")
                args.append(row[0])
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM items WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT ?",
                (*args, limit + 1),
            ).fetchall()
        return [_item(r) for r in rows[:limit]], len(rows) > limit

    def counts(self) -> dict[str, int]:
        """Items per state (every state listed, zeros included)."""
        with self._mutex:
            rows = dict(self._db.execute("SELECT state, COUNT(*) FROM items GROUP BY state").fetchall())
        return {s.value: int(rows.get(s.value, 0)) for s in ItemState}

    def expire(self, now: float | None = None) -> int:
        """Mark queued items past their TTL `expired` (kept, with the reason)."""
        now = time.time() if now is None else now
        with self._tx() as db:
            cur = db.execute(
                "UPDATE items SET state = ?, updated_at = ?, "
                "error = 'not delivered before its TTL ran out after ' || attempts || ' attempt(s)'"
                "    || COALESCE(': ' || error, '') "
                "WHERE state = ? AND expires_at <= ?",
                (ItemState.EXPIRED.value, now, ItemState.QUEUED.value, now),
            )
            return cur.rowcount

    def purge_finished(self, now: float | None = None) -> int:
        """Delete items that ended (done, failed, expired, dropped) more than one TTL ago: the file stays bounded."""
        now = time.time() if now is None else now
        with self._tx() as db:
            cur = db.execute(f"DELETE FROM items WHERE state NOT IN {PENDING} AND updated_at <= ?", (now - self.ttl_s,))
            return cur.rowcount

    def claim_due(self, limit: int, now: float | None = None) -> list[QueueItem]:
        """Move up to `limit` due items (oldest first) to `delivering` and count the attempt."""
        now = time.time() if now is None else now
        with self._tx() as db:
            rows = db.execute(
                "SELECT seq FROM items WHERE state = ? AND next_attempt_at <= ? AND expires_at > ? "
                "ORDER BY seq LIMIT ?",
                (ItemState.QUEUED.value, now, now, limit),
            ).fetchall()
            seqs = [r[0] for r in rows]
            if not seqs:
                return []
            marks = ",".join("?" * len(seqs))
            db.execute(
                f"UPDATE items SET state = ?, attempts = attempts + 1, updated_at = ? WHERE seq IN ({marks})",
                (ItemState.DELIVERING.value, now, *seqs),
            )
            claimed = db.execute(f"SELECT {_COLUMNS} FROM items WHERE seq IN ({marks}) ORDER BY seq", seqs)
            return [_item(r) for r in claimed.fetchall()]

    def next_due_at(self) -> float | None:
        """When the earliest queued item becomes due (None: nothing queued)."""
        with self._mutex:
            (when,) = self._db.execute(
                "SELECT MIN(next_attempt_at) FROM items WHERE state = ?", (ItemState.QUEUED.value,)
            ).fetchone()
        return None if when is None else float(when)

    def complete(self, item_id: str, status: int, result: Any) -> None:
        self.settle([Outcome(item_id, ItemState.DONE, status, result=result)])

    def fail(self, item_id: str, status: int | None, error: str) -> None:
        self.settle([Outcome(item_id, ItemState.FAILED, status, error=error)])

    def retry_later(self, item_id: str, delay_s: float, error: str, status: int | None = None) -> None:
        """Back to queued, due after `delay_s`; the last error is kept for the client to see."""
        self.settle([Outcome(item_id, ItemState.QUEUED, status, error=error, delay_s=delay_s)])

    def settle(self, outcomes: list[Outcome]) -> None:
        """Record the outcomes of claimed items in one commit (one fsync for a whole delivery round)."""
        now = time.time()
        with self._tx() as db:
            for o in outcomes:
                result = None if o.result is None else json.dumps(o.result)
                db.execute(
                    "UPDATE items SET state = ?, status = ?, result = ?, error = ?, updated_at = ?, "
                    "next_attempt_at = ? WHERE id = ? AND state = ?",
                    (o.state.value, o.status, result, o.error, now, now + o.delay_s, o.item_id, DELIVERING),
                )


def _item(row: tuple[Any, ...]) -> QueueItem:
    (item_id, kind, key, endpoint, body, state, attempts, created, expires, due, updated, status, result, error) = row
    return QueueItem(
        id=item_id,
        kind=ItemKind(kind),
        idempotency_key=key,
        endpoint=endpoint,
        body=json.loads(body),
        state=ItemState(state),
        attempts=attempts,
        created_at=created,
        expires_at=expires,
        next_attempt_at=due,
        updated_at=updated,
        status=status,
        result=None if result is None else json.loads(result),
        error=error,
    )
