"""The receiving side of exactly-once: a repeated `Idempotency-Key` gets the stored response, never a rerun.

Devices deliver queued work at least once (a device killed mid-request sends it again after restart).
A receiver mounts `IdempotencyMiddleware` and each (device, key) executes once:

- first time: the request runs; its status, headers and body are stored durably (committed to SQLite with
  synchronous=FULL, or to PostgreSQL)
  before the client sees the end of the response;
- a repeat with the same body: the stored response, with header `Idempotent-Replayed: true`;
- a repeat while the first is still running: it waits (up to `wait_s`) and then gets the stored response;
  past that, 409 with `Retry-After` (so two concurrent requests never both execute);
- the same key with a different method, path or body: 422 (a key names one request);
- a response that says "not done, try again" (408, 429, 5xx), an authentication refusal (401, 403) or an
  exception is not stored: the key is released so a retry runs.

A request carrying the header runs to completion even if its client leaves, so the retry finds the answer.
The device is what `device_of(scope)` says: by default `scope["state"]["device_id"]` (set by the gateway's
auth, mounted outside this middleware), else a digest of the bearer key.

    app.add_middleware(IdempotencyMiddleware, store=IdempotencyStore(path))   # add it before auth
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cloud_sync.database import Database, DatabaseUnavailable, SQLiteDatabase, open_database
from edge_sdk.errors import ConfigError

log = logging.getLogger("edge_sdk.idempotency")
HEADER = "idempotency-key"
REPLAYED = "idempotent-replayed"
MAX_KEY_LENGTH = 255
# refused or "try again": nothing was executed (409: an upstream's "same key still in progress")
_NOT_STORED = frozenset({401, 403, 408, 409, 425, 429})
_SKIP_HEADERS = frozenset({b"content-length", b"date", b"server", b"transfer-encoding", b"connection"})


class Begin(StrEnum):
    EXECUTE = "execute"  # this caller owns the key now: run the request
    REPLAY = "replay"
    IN_PROGRESS = "in-progress"
    MISMATCH = "mismatch"


@dataclass(frozen=True)
class StoredResponse:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


_SCHEMA = [
    """
    CREATE TABLE IF NOT EXISTS responses (
        device TEXT NOT NULL,
        key TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        state TEXT NOT NULL,
        started_at REAL NOT NULL,
        finished_at REAL,
        status INTEGER,
        headers TEXT,
        body BLOB,
        owner TEXT,
        PRIMARY KEY (device, key)
    )
    """
]


class IdempotencyStore:
    """(device, key) → the one response. Safe across threads, processes and gateway replicas.

    `database` is a Database (shared by the gateway's stores, e.g. PostgreSQL) or a SQLite file path.
    A running request renews its claim every `lease_s` / 3; an `in-progress` claim not renewed for `lease_s`
    belongs to a receiver that died mid-request: it is taken over. A claim records its owner (host, pid and the
    process's start time): one whose owner was a process of this host that is gone (a receiver killed and
    restarted) is taken over at once, without waiting out the lease.
    """

    def __init__(self, database: Database | str | Path, *, lease_s: float = 300.0) -> None:
        if lease_s <= 0:
            raise ConfigError(f"lease_s must be > 0, got {lease_s}")
        self.lease_s = lease_s
        self.owner = _this_process()
        self._owned = not hasattr(database, "transaction")
        self.db: Database = open_database(database) if self._owned else database  # type: ignore[assignment,arg-type]
        self.path = Path(self.db.url)
        if isinstance(self.db, SQLiteDatabase):
            _add_owner_column(self.db)
        self.db.migrate("idempotency", _SCHEMA)

    def close(self) -> None:
        if self._owned:
            self.db.close()

    def begin(self, device: str, key: str, fingerprint: str) -> tuple[Begin, StoredResponse | None]:
        now = time.time()
        with self.db.transaction(f"idempotency:{device}:{key}") as tx:
            rows = tx.execute(
                "SELECT fingerprint, state, started_at, status, headers, body, owner FROM responses "
                "WHERE device = ? AND key = ?",
                (device, key),
            )
            row = rows[0] if rows else None
            outcome, stored = Begin.EXECUTE, None
            if row is None:
                tx.execute(
                    "INSERT INTO responses (device, key, fingerprint, state, started_at, owner) "
                    "VALUES (?, ?, ?, 'in-progress', ?, ?)",
                    (device, key, fingerprint, now, self.owner),
                )
            elif row[0] != fingerprint:
                outcome = Begin.MISMATCH
            elif row[1] == "done":
                headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in json.loads(row[4])]
                outcome, stored = Begin.REPLAY, StoredResponse(row[3], headers, bytes(row[5]))
            elif row[2] > now - self.lease_s and _may_be_alive(row[6]):
                outcome = Begin.IN_PROGRESS
            else:  # the claim's receiver died: take it over
                tx.execute(
                    "UPDATE responses SET started_at = ?, owner = ? WHERE device = ? AND key = ?",
                    (now, self.owner, device, key),
                )
        return outcome, stored

    def finish(self, device: str, key: str, response: StoredResponse) -> None:
        headers = json.dumps([(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.headers])
        with self.db.transaction() as tx:
            tx.execute(
                "UPDATE responses SET state = 'done', finished_at = ?, status = ?, headers = ?, body = ? "
                "WHERE device = ? AND key = ?",
                (time.time(), response.status, headers, response.body, device, key),
            )

    def renew(self, device: str, key: str) -> None:
        """The request holding this claim is still running: its lease starts again."""
        with self.db.transaction() as tx:
            tx.execute(
                "UPDATE responses SET started_at = ? WHERE device = ? AND key = ? AND state = 'in-progress'",
                (time.time(), device, key),
            )

    def release(self, device: str, key: str) -> None:
        """Forget an in-progress claim whose request did not complete, so a retry executes."""
        with self.db.transaction() as tx:
            tx.execute("DELETE FROM responses WHERE device = ? AND key = ? AND state = 'in-progress'", (device, key))

    def count(self) -> int:
        with self.db.transaction() as tx:
            return int(tx.execute("SELECT COUNT(*) FROM responses WHERE state = 'done'")[0][0])


def _add_owner_column(db: SQLiteDatabase) -> None:
    """A SQLite store written before owners were recorded (and before schema versions) gains the column."""
    with db.transaction() as tx:
        columns = {row[1] for row in tx.execute("PRAGMA table_info(responses)")}
        if columns and "owner" not in columns:
            tx.execute("ALTER TABLE responses ADD COLUMN owner TEXT")


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22): with the pid, it names one
    process, even after the pid is reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _this_process() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{_start_time(os.getpid()) or '?'}"


def _may_be_alive(owner: str | None) -> bool:
    """False only when `owner` was a process of this host that is certainly gone; otherwise the lease decides."""
    if not owner:
        return True
    host, _, rest = owner.partition(":")
    pid, _, started = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit() or started == "?" or not Path("/proc/self/stat").exists():
        return True
    return _start_time(int(pid)) == started


def upstream_key(device: str, key: str) -> str:
    """The key a receiver passes on to its own upstream for (device, key): one upstream key per device's key, so
    two devices' "order-17" stay apart there, and a retry after a receiver crash is answered by the upstream's
    own idempotency instead of running again."""
    return "edge-" + hashlib.sha256(f"{device}\n{key}".encode()).hexdigest()[:48]


def default_device_of(scope: Scope) -> str:
    state = scope.get("state") or {}
    if state.get("device_id"):
        return str(state["device_id"])
    for name, value in scope.get("headers") or []:
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            return "key:" + hashlib.sha256(value[7:]).hexdigest()[:32]  # never store the key itself
    return "anonymous"


class IdempotencyMiddleware:
    """ASGI middleware for POSTs that carry `Idempotency-Key` (others pass through untouched)."""

    def __init__(
        self,
        app: ASGIApp,
        store: IdempotencyStore,
        *,
        device_of: Callable[[Scope], str] = default_device_of,
        wait_s: float = 10.0,
    ) -> None:
        self.app, self.store, self.device_of, self.wait_s = app, store, device_of, wait_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = _header(scope, HEADER) if scope["type"] == "http" and scope["method"] == "POST" else None
        if key is None:
            await self.app(scope, receive, send)
            return
        if not 0 < len(key) <= MAX_KEY_LENGTH:
            await _json(send, 400, f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters, got {len(key)}")
            return
        body = await _read_body(receive)
        if body is None:
            return  # the client left before its request was complete: nothing to execute, nothing to answer
        device = self.device_of(scope)
        fingerprint = hashlib.sha256(b"%s %s\n%s" % (scope["method"].encode(), scope["path"].encode(), body))
        deadline = time.monotonic() + self.wait_s
        while True:
            try:
                outcome, stored = await asyncio.to_thread(self.store.begin, device, key, fingerprint.hexdigest())
            except DatabaseUnavailable as exc:  # nothing was executed: the device's retry runs it later
                await _json(send, 503, str(exc), retry_after=5)
                return
            if outcome is not Begin.IN_PROGRESS or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.05)
        if outcome is Begin.REPLAY and stored is not None:
            await _send_stored(send, stored)
        elif outcome is Begin.MISMATCH:
            await _json(send, 422, f"Idempotency-Key {key!r} was already used for a different request")
        elif outcome is Begin.IN_PROGRESS:
            await _json(send, 409, f"a request with Idempotency-Key {key!r} is still in progress", retry_after=1)
        else:
            # Shielded: if this request's task is cancelled, the execution still ends and is stored.
            await asyncio.shield(asyncio.ensure_future(self._execute(scope, body, send, device, key)))

    async def _execute(self, scope: Scope, body: bytes, send: Send, device: str, key: str) -> None:
        start: Message = {}
        chunks: list[bytes] = []
        client_gone = False
        delivered = False

        async def replay_body() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()  # never "disconnect": the request runs to completion (see above)
            raise AssertionError("unreachable")

        async def forward(message: Message) -> None:
            nonlocal client_gone
            if not client_gone:
                try:
                    await send(message)
                except Exception:
                    client_gone = True  # keep executing and storing: the retry will want the answer

        last: Message | None = None

        async def capture(message: Message) -> None:
            nonlocal start, last
            if message["type"] == "http.response.start":
                start = message
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    last = message  # held back until the response is stored
                    return
            await forward(message)

        async def keep_claim() -> None:  # a slow request is not a dead receiver: no one takes its key over
            while True:
                await asyncio.sleep(self.store.lease_s / 3)
                await asyncio.to_thread(self.store.renew, device, key)

        renewing = asyncio.ensure_future(keep_claim())
        try:
            await self.app(scope, replay_body, capture)
        except BaseException:
            await asyncio.to_thread(self.store.release, device, key)
            raise
        finally:
            renewing.cancel()
        status = int(start.get("status", 500))
        if status >= 500 or status in _NOT_STORED or not start:
            await self._until_stored(self.store.release, device, key)
        else:
            headers = [(k.lower(), v) for k, v in start.get("headers", []) if k.lower() not in _SKIP_HEADERS]
            stored = StoredResponse(status, headers, b"".join(chunks))
            if not await self._until_stored(self.store.finish, device, key, stored):
                return  # the response's end is held back: the client sees it cut and retries, never a rerun
        if last is not None:
            await forward(last)

    async def _until_stored(self, write: Callable[..., None], *args: Any) -> bool:
        """Write through a database outage: the claim is ours for `lease_s`, so the executed answer is kept."""
        deadline, pause = time.monotonic() + self.store.lease_s, 0.1
        while True:
            try:
                await asyncio.to_thread(write, *args)
                return True
            except DatabaseUnavailable as exc:
                if time.monotonic() + pause > deadline:
                    log.error(
                        "idempotency store unavailable for %.0f s; answer not stored: %s", self.store.lease_s, exc
                    )
                    return False
                await asyncio.sleep(pause)
                pause = min(pause * 2, 5.0)


def _header(scope: Scope, name: str) -> str | None:
    wanted = name.encode()
    for k, v in scope.get("headers") or []:
        if k.lower() == wanted:
            return str(v.decode("latin-1").strip())
    return None


async def _read_body(receive: Receive) -> bytes | None:
    parts = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(parts)


async def _send_stored(send: Send, stored: StoredResponse) -> None:
    headers = [*stored.headers, (b"content-length", str(len(stored.body)).encode()), (REPLAYED.encode(), b"true")]
    await send({"type": "http.response.start", "status": stored.status, "headers": headers})
    await send({"type": "http.response.body", "body": stored.body, "more_body": False})


async def _json(send: Send, status: int, message: str, retry_after: int | None = None) -> None:
    code = {
        400: "invalid_idempotency_key",
        409: "idempotency_in_progress",
        422: "idempotency_key_reused",
        503: "database_unavailable",
    }[status]
    body = json.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}})
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body.encode(), "more_body": False})
