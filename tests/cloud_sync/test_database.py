"""The gateway's stores on SQLite and on a real PostgreSQL: the same behaviour, versioned schemas, outages."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from gateway_helpers import DEVICE_KEY, auth, gateway_config, running_gateway

from cloud_sync.database import DatabaseUnavailable, open_database, postgres_sql
from cloud_sync.idempotency import Begin, IdempotencyStore, StoredResponse
from cloud_sync.registry import Registry
from cloud_sync.telemetry import TelemetryStore
from edge_sdk.apps.daemon.pool import DirectorySource
from edge_sdk.errors import ConfigError


@pytest.fixture
def database(database_url, tmp_path):
    db = open_database(database_url or tmp_path / "state.sqlite3")
    yield db
    db.close()


def test_sqlite_spelling_becomes_postgres_spelling():
    assert (
        postgres_sql("SELECT a FROM t WHERE b = ? AND c LIKE '5%'") == "SELECT a FROM t WHERE b = %s AND c LIKE '5%%'"
    )
    assert postgres_sql("CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, x REAL, y BLOB)") == (
        "CREATE TABLE t (id BIGSERIAL PRIMARY KEY, x DOUBLE PRECISION, y BYTEA)"
    )


def test_stores_behave_the_same_on_both_databases(database, tmp_path):
    telemetry = TelemetryStore(database)
    assert telemetry.record("pi-1", [{"n": 1}, {"n": 2}], "k1") is True
    assert telemetry.record("pi-1", [{"n": 1}, {"n": 2}], "k1") is False  # the same batch again: not stored twice
    assert telemetry.record("pi-2", [{"n": 3}], None) is True
    assert (telemetry.count(), telemetry.count("pi-1"), telemetry.items("pi-1")) == (3, 2, [{"n": 1}, {"n": 2}])

    idempotency = IdempotencyStore(database, lease_s=60)
    assert idempotency.begin("pi-1", "order-17", "f1") == (Begin.EXECUTE, None)
    assert idempotency.begin("pi-1", "order-17", "f1")[0] is Begin.IN_PROGRESS  # the first still runs
    assert idempotency.begin("pi-1", "order-17", "f2")[0] is Begin.MISMATCH
    idempotency.finish("pi-1", "order-17", StoredResponse(200, [(b"x-a", b"1")], b"\x00binary\xff"))
    outcome, stored = idempotency.begin("pi-1", "order-17", "f1")
    assert outcome is Begin.REPLAY and stored == StoredResponse(200, [(b"x-a", b"1")], b"\x00binary\xff")
    assert idempotency.begin("pi-2", "order-17", "f1")[0] is Begin.EXECUTE  # keys are per device

    registry = Registry(tmp_path / "registry", database=database)
    assert registry.list() == []


def test_a_schema_from_a_newer_gateway_is_refused(database):
    TelemetryStore(database)
    with database.transaction() as tx:
        tx.execute("UPDATE schema_versions SET version = 99 WHERE component = 'telemetry'")
    with pytest.raises(ConfigError, match=r"telemetry schema .* is version 99, newer than this gateway's version 2"):
        TelemetryStore(database)


def test_a_json_index_of_an_older_gateway_is_imported(tmp_path, packed_versions):
    old = Registry(tmp_path / "old")
    entry, _ = old.publish(packed_versions["1.0.0"])
    old.close()
    (tmp_path / "old" / "index.sqlite3").unlink()  # as an older gateway left it: only index.json
    old_entry = {**entry.to_json(), "published_at": 1.0}
    (tmp_path / "old" / "index.json").write_text(json.dumps([old_entry]))
    reopened = Registry(tmp_path / "old")
    assert [(e.name, e.version, e.sha256) for e in reopened.list()] == [(entry.name, "1.0.0", entry.sha256)]
    assert (tmp_path / "old" / "index.json.imported").is_file()


def test_postgres_down_answers_503_and_recovers(postgres, key_files, tmp_path):
    url = postgres.database()
    config = gateway_config(key_files, tmp_path / "registry", database_url=url)
    batch = {"items": [{"up": 1}]}
    keyed_headers = {**auth(DEVICE_KEY), "Idempotency-Key": "t-1"}
    with running_gateway(DirectorySource([]), config) as gateway:
        assert httpx.post(f"{gateway}/v1/telemetry", json=batch, headers=auth(DEVICE_KEY)).status_code == 202
        postgres.stop()
        try:
            down = httpx.post(f"{gateway}/v1/telemetry", json=batch, headers=auth(DEVICE_KEY), timeout=60)
            assert down.status_code == 503 and down.headers["retry-after"] == "5"
            assert "is unavailable" in down.json()["error"]["message"]
            keyed = httpx.post(
                f"{gateway}/v1/telemetry",
                json=batch,
                headers={**auth(DEVICE_KEY), "Idempotency-Key": "t-1"},
                timeout=60,
            )
            assert keyed.status_code == 503  # refused before anything ran: the device's queue retries it
        finally:
            postgres.start()
        # the pool reconnects in the background (with backoff): the device's retry gets through once it has
        deadline = time.monotonic() + 60
        while (
            again := httpx.post(f"{gateway}/v1/telemetry", json=batch, headers=keyed_headers, timeout=60)
        ).status_code == 503:
            assert time.monotonic() < deadline, again.text
            time.sleep(0.5)
        assert again.status_code == 202 and again.json()["accepted"] == 1
        assert httpx.get(f"{gateway}/v1/telemetry", headers=auth(DEVICE_KEY)).json()["items"] == 2


def test_unreachable_postgres_is_refused_at_start():
    with pytest.raises(ConfigError, match=r"cannot connect to the database postgresql://u:\*\*\*@127.0.0.1:9/x"):
        open_database("postgresql://u:secret@127.0.0.1:9/x")
    with pytest.raises(ConfigError, match="scheme 'mysql' is not supported"):
        open_database("mysql://db/x")
    assert issubclass(DatabaseUnavailable, Exception)
