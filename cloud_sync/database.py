"""Where the gateway keeps its state: one SQLite file (the embedded default) or PostgreSQL (replicas).

The stores (telemetry, idempotency, registry index, rollouts) write their SQL once, in SQLite's spelling with
`?` parameters; the PostgreSQL side translates the few differences (placeholders, types). A write
transaction is serialized per store: SQLite by `BEGIN IMMEDIATE` (one writer at a time), PostgreSQL by a
transaction-scoped advisory lock named after the store, so check-then-write logic holds across replicas.

Each store's schema is versioned in `schema_versions`; a database written by a newer gateway is refused with
both versions named, and an unreachable PostgreSQL raises `DatabaseUnavailable` (the gateway answers 503 and
recovers when it returns).

    db = open_database("postgresql://gateway@db/edge")   # or a path / sqlite:///path
    db.migrate("telemetry", [SCHEMA_V1])
    with db.transaction("telemetry") as tx:
        tx.execute("INSERT INTO items VALUES (?, ?)", (a, b))
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import threading
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from edge_sdk.errors import ConfigError, StoreError

Row = tuple[Any, ...]


class DatabaseUnavailable(StoreError):
    """The database cannot be reached now; the request may be retried (503)."""


class Transaction(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...


class Database(Protocol):
    url: str

    def transaction(self, lock: str | None = None) -> contextlib.AbstractContextManager[Transaction]: ...

    def migrate(self, component: str, steps: Sequence[str]) -> None: ...

    def close(self) -> None: ...


def open_database(url: str | Path) -> Database:
    """A path or `sqlite:///path` opens SQLite; `postgresql://...` opens a pooled PostgreSQL connection."""
    text = str(url)
    if text.startswith(("postgresql://", "postgres://")):
        return PostgresDatabase(text)
    if "://" in text and not text.startswith("sqlite:///"):
        scheme = text.split("://", 1)[0]
        raise ConfigError(f"database URL scheme {scheme!r} is not supported; use postgresql://... or a file path")
    return SQLiteDatabase(Path(text.removeprefix("sqlite:///")))


_VERSIONS = "CREATE TABLE IF NOT EXISTS schema_versions (component TEXT PRIMARY KEY, version INTEGER NOT NULL)"


def _migrate(db: Database, component: str, steps: Sequence[str]) -> None:
    """Apply the steps past the stored version; refuse a database written by a newer gateway."""
    with db.transaction("schema") as tx:
        tx.execute(_VERSIONS)
        rows = tx.execute("SELECT version FROM schema_versions WHERE component = ?", (component,))
        have = int(rows[0][0]) if rows else 0
        if have > len(steps):
            raise ConfigError(
                f"the {component} schema in {db.url} is version {have}, newer than this gateway's version "
                f"{len(steps)}: upgrade edge-sdk on this replica (or point it at another database)"
            )
        for step in steps[have:]:
            for statement in (s.strip() for s in step.split(";")):
                if statement:
                    tx.execute(statement)
        if have < len(steps):
            tx.execute(
                "INSERT INTO schema_versions (component, version) VALUES (?, ?) "
                "ON CONFLICT (component) DO UPDATE SET version = excluded.version",
                (component, len(steps)),
            )


class _SQLiteTransaction:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self._db.execute(sql, tuple(params)).fetchall()

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._db.executemany(sql, rows)


class SQLiteDatabase:
    """One file, one connection shared by the gateway's threads; every commit synchronous=FULL."""

    def __init__(self, path: Path) -> None:
        self.path, self.url = path, str(path)
        self._lock = threading.RLock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
        except (sqlite3.Error, OSError) as exc:
            raise ConfigError(f"cannot use {str(path)!r} as a database: {exc}") from None

    @contextlib.contextmanager
    def transaction(self, lock: str | None = None) -> Iterator[Transaction]:
        del lock  # BEGIN IMMEDIATE: one writer at a time for the whole file
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield _SQLiteTransaction(self._db)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def migrate(self, component: str, steps: Sequence[str]) -> None:
        _migrate(self, component, steps)

    def close(self) -> None:
        with self._lock:
            self._db.close()


_TYPES = [
    (re.compile(r"\bINTEGER PRIMARY KEY AUTOINCREMENT\b", re.I), "BIGSERIAL PRIMARY KEY"),
    (re.compile(r"\bBLOB\b", re.I), "BYTEA"),
    (re.compile(r"\bREAL\b", re.I), "DOUBLE PRECISION"),
    (re.compile(r"\bINTEGER\b", re.I), "BIGINT"),
]


def postgres_sql(sql: str) -> str:
    """SQLite's spelling to PostgreSQL's: `?` parameters to `%s`, and the column types that differ."""
    out = sql.replace("%", "%%").replace("?", "%s")
    if out.lstrip().upper().startswith(("CREATE", "ALTER")):
        for pattern, replacement in _TYPES:
            out = pattern.sub(replacement, out)
    return out


class _PostgresTransaction:
    def __init__(self, connection: Any) -> None:
        self._db = connection

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        cursor = self._db.execute(postgres_sql(sql), tuple(params))
        return list(cursor.fetchall()) if cursor.description is not None else []

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with self._db.cursor() as cursor:
            cursor.executemany(postgres_sql(sql), [tuple(r) for r in rows])


class PostgresDatabase:
    """A small pool of connections (psycopg 3); each transaction takes its store's advisory lock."""

    def __init__(self, url: str, *, max_connections: int = 8, connect_timeout_s: float = 5.0) -> None:
        try:
            import psycopg
            from psycopg_pool import ConnectionPool
        except ImportError:  # pragma: no cover - the gateway extra installs them
            raise ConfigError("PostgreSQL needs psycopg: pip install 'edge-sdk[gateway]'") from None
        self.url = _redacted(url)
        self._errors: tuple[type[BaseException], ...] = (psycopg.OperationalError,)
        from psycopg_pool import PoolTimeout

        self._errors += (PoolTimeout,)
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=max_connections,
            timeout=connect_timeout_s,
            kwargs={"connect_timeout": max(1, int(connect_timeout_s))},
            open=False,
            check=ConnectionPool.check_connection,  # a connection broken while the server was down is replaced
        )
        try:
            self._pool.open(wait=True, timeout=connect_timeout_s)
        except self._errors as exc:
            self._pool.close()
            raise ConfigError(f"cannot connect to the database {self.url}: {_first_line(exc)}") from None

    @contextlib.contextmanager
    def transaction(self, lock: str | None = None) -> Iterator[Transaction]:
        try:
            with self._pool.connection() as connection, connection.transaction():
                tx = _PostgresTransaction(connection)
                if lock is not None:  # serializes this store's check-then-write across every replica
                    tx.execute("SELECT pg_advisory_xact_lock(?)", (zlib.crc32(lock.encode()),))
                yield tx
        except self._errors as exc:
            raise DatabaseUnavailable(f"the database {self.url} is unavailable: {_first_line(exc)}") from None

    def migrate(self, component: str, steps: Sequence[str]) -> None:
        _migrate(self, component, steps)

    def close(self) -> None:
        self._pool.close()


def _redacted(url: str) -> str:
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
