"""Anti-rollback, one test per case: what the store and the registry accept and refuse, by version.

Build metadata (`1.0.0+anything`) is refused on install and publish: semantic versioning gives it the
precedence of `1.0.0`, so it could neither be ordered against `1.0.0` nor caught as "same version, other
bytes" (it installed beside the active 1.0.0 before issue 18).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cloud_sync.registry import Registry
from edge_sdk.errors import RegistryError, StoreError
from edge_sdk.semver import build_metadata_refusal
from edge_sdk.store import BundleStore

NAME = "tiny-net"
VERSIONS = ("1.0.0", "1.0.0-rc.1", "1.0.0+build.7", "1.1.0", "1.9.0", "1.10.0", "2.0.0+sha.abc")


@pytest.fixture(scope="module")
def versions(synthetic_bundle, tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("versions")
    return {v: synthetic_bundle(base / v, version=v).root for v in VERSIONS}


@pytest.fixture
def store(tmp_path) -> BundleStore:
    return BundleStore(tmp_path / "store")


def _state(store: BundleStore) -> tuple[str | None, tuple[str, ...]]:
    (model,) = store.list()
    return model.active, model.versions


def test_build_metadata_is_refused_on_install_beside_the_same_version(store, versions):
    store.install(versions["1.0.0"])
    with pytest.raises(StoreError, match=r"'1\.0\.0\+build\.7' carries build metadata \('\+build\.7'\).*'1\.0\.1'"):
        store.install(versions["1.0.0+build.7"])
    assert _state(store) == ("1.0.0", ("1.0.0",))


def test_build_metadata_is_refused_on_install_into_an_empty_store_and_with_allow_downgrade(store, versions):
    with pytest.raises(StoreError, match="carries build metadata"):
        store.install(versions["2.0.0+sha.abc"])
    with pytest.raises(StoreError, match="carries build metadata"):
        store.install(versions["2.0.0+sha.abc"], allow_downgrade=True)
    assert store.list() == []


def test_build_metadata_is_refused_on_publish(versions, tmp_path):
    registry = Registry(tmp_path / "registry")
    with pytest.raises(RegistryError, match=r"refusing to publish tiny-net: version '1\.0\.0\+build\.7' carries"):
        registry.publish(versions["1.0.0+build.7"])
    assert registry.list() == []
    entry, new = registry.publish(versions["1.0.0"])
    assert new and entry.version == "1.0.0"


def test_lower_version_is_refused_unless_allowed(store, versions):
    store.install(versions["1.1.0"])
    with pytest.raises(StoreError, match=r"1\.0\.0 is older than the active version 1\.1\.0"):
        store.install(versions["1.0.0"])
    assert _state(store) == ("1.1.0", ("1.1.0",))
    assert store.install(versions["1.0.0"], allow_downgrade=True).active == "1.0.0"


def test_a_pre_release_is_older_than_its_release(store, versions):
    store.install(versions["1.0.0"])
    with pytest.raises(StoreError, match=r"1\.0\.0-rc\.1 is older than the active version 1\.0\.0"):
        store.install(versions["1.0.0-rc.1"])
    assert _state(store) == ("1.0.0", ("1.0.0",))


def test_versions_compare_by_number_not_by_text(store, versions):
    store.install(versions["1.9.0"])
    assert store.install(versions["1.10.0"]).active == "1.10.0"  # an upgrade, though "1.10" < "1.9" as text
    with pytest.raises(StoreError, match=r"1\.9\.0 is older than the active version 1\.10\.0"):
        store.install(versions["1.9.0"], activate=True)


def test_same_version_other_bytes_is_refused_same_bytes_is_a_no_op(store, versions, synthetic_bundle, tmp_path):
    store.install(versions["1.0.0"])
    assert _state(store) == ("1.0.0", ("1.0.0",))
    store.install(versions["1.0.0"])
    assert _state(store) == ("1.0.0", ("1.0.0",))
    other = synthetic_bundle(tmp_path / "other", version="1.0.0", created_by="someone else").root
    with pytest.raises(StoreError, match=r"1\.0\.0 is already installed with different contents"):
        store.install(other)


def test_rollback_stays_an_explicit_choice(store, versions):
    store.install(versions["1.0.0"])
    store.install(versions["1.1.0"])
    assert store.rollback(NAME).active == "1.0.0"


def test_the_refusal_suggests_a_usable_version():
    assert build_metadata_refusal("1.0.0") is None
    assert build_metadata_refusal("1.0.0-rc.1") is None
    assert "'1.2.4'" in (build_metadata_refusal("1.2.3+x") or "")


def test_cli_install_prints_the_refusal_as_one_error_line(versions, tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "edge_sdk.cli", "install", str(versions["1.0.0+build.7"]), "--store", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [line for line in (run.stdout + run.stderr).splitlines() if line.strip()]
    assert run.returncode == 1, lines
    assert lines[0].startswith("error:") and "build metadata" in lines[0], lines
