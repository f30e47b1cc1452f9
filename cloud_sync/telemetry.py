"""Telemetry the gateway receives from devices: stored durably (SQLite or PostgreSQL), countable per device.

A batch whose Idempotency-Key was already stored for that device is acknowledged again but not stored twice.
The gateway's routes over this store are in `edge_sdk.apps.gateway.telemetry_routes`.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from cloud_sync.database import Database, open_database
from edge_sdk.errors import ConfigError

MAX_ITEMS = 10_000


class TelemetryBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device: str | None = None
    items: list[dict[str, Any]] = Field(max_length=MAX_ITEMS)


_SCHEMA = [
    """
    CREATE TABLE IF NOT EXISTS batches (
        device TEXT NOT NULL, key TEXT NOT NULL, received_at REAL NOT NULL, items INTEGER NOT NULL,
        PRIMARY KEY (device, key));
    CREATE TABLE IF NOT EXISTS items (device TEXT NOT NULL, received_at REAL NOT NULL, item TEXT NOT NULL);
    CREATE INDEX IF NOT EXISTS items_device ON items (device)
    """,
    # 2: an item's place in its batch, so every database returns a device's items in the order sent
    "ALTER TABLE items ADD COLUMN seq INTEGER",
]


class TelemetryStore:
    """Batches and their items in the gateway's database; every write is committed before it is acknowledged.

    `database` is a Database (shared by the gateway's stores, e.g. PostgreSQL) or a SQLite file path.
    """

    def __init__(self, database: Database | str | Path) -> None:
        self._owned = not hasattr(database, "transaction")
        self.db: Database = open_database(database) if self._owned else database  # type: ignore[assignment,arg-type]
        self.path = Path(self.db.url)
        try:
            self.db.migrate("telemetry", _SCHEMA)
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot use {self.db.url!r} as the telemetry database: {exc}") from None

    def record(self, device: str, items: list[dict[str, Any]], key: str | None) -> bool:
        """Store a batch; False (and nothing stored) when `key` was seen for this device before."""
        now = time.time()
        with self.db.transaction("telemetry") as tx:
            if key is not None:
                if tx.execute("SELECT 1 FROM batches WHERE device = ? AND key = ?", (device, key)):
                    return False
                tx.execute("INSERT INTO batches VALUES (?, ?, ?, ?)", (device, key, now, len(items)))
            tx.executemany(
                "INSERT INTO items (device, received_at, item, seq) VALUES (?, ?, ?, ?)",
                [(device, now, json.dumps(item), seq) for seq, item in enumerate(items)],
            )
        return True

    def count(self, device: str | None = None) -> int:
        with self.db.transaction() as tx:
            if device is None:
                rows = tx.execute("SELECT COUNT(*) FROM items")
            else:
                rows = tx.execute("SELECT COUNT(*) FROM items WHERE device = ?", (device,))
        return int(rows[0][0])

    def items(self, device: str) -> list[dict[str, Any]]:
        with self.db.transaction() as tx:
            rows = tx.execute("SELECT item FROM items WHERE device = ? ORDER BY received_at, seq", (device,))
        return [json.loads(r[0]) for r in rows]

    def latest(self) -> list[tuple[str, int, float, dict[str, Any]]]:
        """Per device that reported: (device, items stored, when the last arrived, the last item)."""
        out = []
        with self.db.transaction() as tx:
            for device, n, at in tx.execute(
                "SELECT device, COUNT(*), MAX(received_at) FROM items GROUP BY device ORDER BY device"
            ):
                (item,) = tx.execute(
                    "SELECT item FROM items WHERE device = ? ORDER BY received_at DESC, COALESCE(seq, 0) DESC LIMIT 1",
                    (device,),
                )[0]
                out.append((device, int(n), float(at), json.loads(item)))
        return out

    def close(self) -> None:
        if self._owned:
            self.db.close()
