"""Telemetry the gateway receives from devices: stored durably in SQLite, countable per device.

    POST /v1/telemetry   {"device": "<id>", "items": [{...}, ...]}   Idempotency-Key: <key>
                         -> 202 {"device", "accepted", "duplicate"}
    GET  /v1/telemetry   -> {"device": <caller>, "items": <stored for the caller>}

The device is the authenticated caller; a body naming another device is refused. A batch whose
Idempotency-Key was already stored for that device is acknowledged again but not stored twice.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from cloud_sync.devices import caller_of
from edge_sdk.daemon.metrics import Metrics
from edge_sdk.errors import ConfigError

MAX_ITEMS = 10_000


class TelemetryBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device: str | None = None
    items: list[dict[str, Any]] = Field(max_length=MAX_ITEMS)


class TelemetryStore:
    """Batches and their items; every write is committed with synchronous=FULL before it is acknowledged."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(
                """
                CREATE TABLE IF NOT EXISTS batches (
                    device TEXT NOT NULL, key TEXT NOT NULL, received_at REAL NOT NULL, items INTEGER NOT NULL,
                    PRIMARY KEY (device, key));
                CREATE TABLE IF NOT EXISTS items (
                    device TEXT NOT NULL, received_at REAL NOT NULL, item TEXT NOT NULL);
                CREATE INDEX IF NOT EXISTS items_device ON items (device);
                """
            )
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot use {str(self.path)!r} as the telemetry database: {exc}") from None

    def record(self, device: str, items: list[dict[str, Any]], key: str | None) -> bool:
        """Store a batch; False (and nothing stored) when `key` was seen for this device before."""
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if key is not None:
                    seen = self._db.execute(
                        "SELECT 1 FROM batches WHERE device = ? AND key = ?", (device, key)
                    ).fetchone()
                    if seen:
                        self._db.execute("ROLLBACK")
                        return False
                    self._db.execute("INSERT INTO batches VALUES (?, ?, ?, ?)", (device, key, now, len(items)))
                self._db.executemany(
                    "INSERT INTO items VALUES (?, ?, ?)", [(device, now, json.dumps(item)) for item in items]
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return True

    def count(self, device: str | None = None) -> int:
        with self._lock:
            if device is None:
                row = self._db.execute("SELECT COUNT(*) FROM items").fetchone()
            else:
                row = self._db.execute("SELECT COUNT(*) FROM items WHERE device = ?", (device,)).fetchone()
        return int(row[0])

    def items(self, device: str) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT item FROM items WHERE device = ? ORDER BY rowid", (device,)).fetchall()
        return [json.loads(r[0]) for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _error(message: str, status: int) -> JSONResponse:
    kind = "permission_error" if status == 403 else "invalid_request_error"
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": None}}, status)


def add_telemetry_routes(app: FastAPI, store: TelemetryStore, metrics: Metrics) -> None:
    metrics.describe("edge_gateway_telemetry_items_total", "counter", "telemetry items stored, by device")

    @app.post("/v1/telemetry", status_code=202, response_model=None)
    async def receive(batch: TelemetryBatch, request: Request) -> dict[str, Any] | JSONResponse:
        caller = caller_of(request.scope)
        device = caller.id if caller else batch.device
        if device is None:
            return _error("telemetry needs a device: send 'device' or authenticate with a device key", 400)
        if batch.device is not None and batch.device != device:
            return _error(f"this key belongs to device {device!r}; it may not send telemetry for {batch.device!r}", 403)
        key = request.headers.get("idempotency-key")
        new = await asyncio.to_thread(store.record, device, batch.items, key)
        if new:
            metrics.inc("edge_gateway_telemetry_items_total", len(batch.items), device=device)
        return {"device": device, "accepted": len(batch.items) if new else 0, "duplicate": not new}

    @app.get("/v1/telemetry", response_model=None)
    async def stored(request: Request) -> dict[str, Any] | JSONResponse:
        caller = caller_of(request.scope)
        if caller is None:
            return _error("authenticate with a device key to read its telemetry count", 400)
        return {"device": caller.id, "items": await asyncio.to_thread(store.count, caller.id)}
