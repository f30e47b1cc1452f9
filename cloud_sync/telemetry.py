"""Telemetry the gateway receives from devices: stored durably in SQLite, countable per device.

A batch whose Idempotency-Key was already stored for that device is acknowledged again but not stored twice.
The gateway's routes over this store are in `edge_sdk.apps.gateway.telemetry_routes`.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

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

    def latest(self) -> list[tuple[str, int, float, dict[str, Any]]]:
        """Per device that reported: (device, items stored, when the last arrived, the last item)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT device, COUNT(*), MAX(received_at), MAX(rowid) FROM items GROUP BY device ORDER BY device"
            ).fetchall()
            last = {
                rowid: item
                for rowid, item in self._db.execute(
                    f"SELECT rowid, item FROM items WHERE rowid IN ({','.join('?' * len(rows))})", [r[3] for r in rows]
                )
            }
        return [(device, int(n), float(at), json.loads(last[rowid])) for device, n, at, rowid in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()
