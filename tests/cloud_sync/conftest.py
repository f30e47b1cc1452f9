"""Fixtures of the cloud tests: keys, bundle versions to publish, a gateway with an empty registry."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from gateway_helpers import DEVICE_KEY, OTHER_KEY, PUBLISHER_KEY, VERSIONS, gateway_config, running_gateway
from postgres_server import PostgresServer

from edge_sdk.apps.daemon.pool import DirectorySource
from edge_sdk.bundle import Bundle


@pytest.fixture(scope="session")
def key_files(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("keys")
    devices = base / "devices.txt"
    devices.write_text(f"# id key\npi-kitchen {DEVICE_KEY}\n\njetson-garage {OTHER_KEY}\n")
    publishers = base / "publishers.txt"
    publishers.write_text(f"ci-release {PUBLISHER_KEY}\n")
    device_key = base / "device.key"
    device_key.write_text(DEVICE_KEY + "\n")
    publisher_key = base / "publisher.key"
    publisher_key.write_text(PUBLISHER_KEY + "\n")
    return {"devices": devices, "publishers": publishers, "device": device_key, "publisher": publisher_key}


@pytest.fixture(scope="session")
def packed_versions(onnx_bundle, tmp_path_factory) -> dict[str, Path]:
    """The digits bundle packed as .edgebundle files that differ only in their manifest's version."""
    base = tmp_path_factory.mktemp("versions")
    packed = {}
    for version in VERSIONS:
        root = base / version
        shutil.copytree(onnx_bundle.root, root)
        manifest = root / "manifest.json"
        manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "version": version}, indent=2))
        packed[version] = Bundle.open(root).pack(base / f"digits-{version}")
    return packed


@pytest.fixture
def registry_gateway(key_files, tmp_path, database_url) -> Iterator[str]:
    """A gateway with an empty registry of its own, no own bundles and no upstream (state: SQLite, PostgreSQL)."""
    config = gateway_config(key_files, tmp_path / "registry", database_url=database_url)
    with running_gateway(DirectorySource([]), config) as url:
        yield url


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL cluster for the whole run (its databases are made per test)."""
    server = PostgresServer()
    server.start()
    yield server
    server.remove()


BACKENDS = ["sqlite", "postgresql"]


def _database_url(request) -> str | None:
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("postgres").database()


@pytest.fixture(params=BACKENDS)
def database_url(request) -> str | None:
    """The gateway's state in SQLite files (None) or in a fresh PostgreSQL database: tests run on both."""
    return _database_url(request)


@pytest.fixture(scope="module", params=BACKENDS)
def module_database_url(request) -> str | None:
    """`database_url` for a gateway a whole module shares: one fresh database per module and backend (pytest
    runs the module's tests on SQLite, then again on PostgreSQL, starting the shared gateway once for each)."""
    return _database_url(request)
