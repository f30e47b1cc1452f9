"""The device bundle store: install, activate, rollback, remove, what it refuses, and real SIGKILLs mid-install."""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from edge_sdk.bundle import Bundle
from edge_sdk.errors import AccuracyGateError, BundleError, StoreError
from edge_sdk.semver import version_key
from edge_sdk.store import CRASH_ENV, STEPS, BundleStore, InstalledModel

NAME = "tiny-net"  # what tests/kernel/conftest.py's synthetic bundles are called


@pytest.fixture(scope="module")
def bundles(synthetic_bundle, tmp_path_factory) -> dict[str, Path]:
    # Same files in every version (same seeds); only the manifest's version differs, as in a real re-release.
    base = tmp_path_factory.mktemp("versions")
    return {v: synthetic_bundle(base / v, version=v).root for v in ("1.0.0", "1.1.0", "2.0.0")}


def _link(root: Path, which: str) -> str:
    return os.readlink(root / "models" / NAME / which)


def test_gc_never_removes_the_active_or_previous_and_remove_model_takes_all(bundles, tmp_path):
    store = BundleStore(tmp_path / "store")
    for version in ("1.0.0", "1.1.0", "2.0.0"):
        store.install(bundles[version])
    store.activate(NAME, "1.0.0")  # active 1.0.0, previous 2.0.0: the newest and the oldest are both kept
    assert store.collectable(0) == [(NAME, "1.1.0")]
    assert store.collectable(1) == [(NAME, "1.1.0")] and store.collectable(2) == []
    with pytest.raises(StoreError, match="keep must be 0 or more"):
        store.collectable(-1)
    assert store.gc(0) == [(NAME, "1.1.0")]
    assert store.list() == [InstalledModel(NAME, "1.0.0", "2.0.0", ("1.0.0", "2.0.0"))]
    assert store.size_bytes(NAME, "1.0.0") > 0
    assert store.remove_model(NAME) == ("1.0.0", "2.0.0")
    assert store.list() == [] and not (tmp_path / "store" / "models" / NAME).exists()
    assert list((tmp_path / "store" / ".staging").iterdir()) == []  # nothing left behind
    with pytest.raises(StoreError, match=f"no model '{NAME}' is installed"):
        store.remove_model(NAME)


def test_install_list_activate_rollback_remove(bundles, tmp_path):
    root = tmp_path / "store"
    store = BundleStore(root)
    assert store.list() == []
    assert store.install(bundles["1.0.0"]) == InstalledModel(NAME, "1.0.0", None, ("1.0.0",))
    assert store.install(bundles["1.1.0"]) == InstalledModel(NAME, "1.1.0", "1.0.0", ("1.0.0", "1.1.0"))
    assert _link(root, "current") == "versions/1.1.0"
    active = store.active(NAME)
    assert active.manifest.version == "1.1.0"
    assert active.root == root / "models" / NAME / "versions" / "1.1.0"  # the real directory, not the link

    assert store.rollback(NAME) == InstalledModel(NAME, "1.0.0", "1.1.0", ("1.0.0", "1.1.0"))
    assert store.rollback(NAME).active == "1.1.0"  # rollback twice rolls forward again

    assert store.install(bundles["2.0.0"], activate=False).active == "1.1.0"
    assert store.activate(NAME, "2.0.0") == InstalledModel(NAME, "2.0.0", "1.1.0", ("1.0.0", "1.1.0", "2.0.0"))
    assert BundleStore(root).list() == store.list()  # it is all on disk

    with pytest.raises(StoreError, match=r"2\.0\.0 is the active version"):
        store.remove(NAME, "2.0.0")
    assert store.remove(NAME, "1.1.0") == InstalledModel(NAME, "2.0.0", None, ("1.0.0", "2.0.0"))
    with pytest.raises(StoreError, match="no previous version"):
        store.rollback(NAME)
    with pytest.raises(StoreError, match=r"no installed version '9\.9\.9'; installed: '1\.0\.0', '2\.0\.0'"):
        store.activate(NAME, "9.9.9")
    with pytest.raises(StoreError, match=rf"no model '\.\.' is installed; installed: '{NAME}'"):
        store.activate("..", "1.0.0")
    assert store.remove(NAME, "1.0.0").versions == ("2.0.0",)
    assert not list((root / ".staging").iterdir())


def test_install_from_edgebundle_archive(bundles, tmp_path):
    packed = Bundle.open(bundles["1.0.0"]).pack(tmp_path / "tiny")
    store = BundleStore(tmp_path / "store")
    assert store.install(packed).active == "1.0.0"
    assert store.active(NAME).manifest == Bundle.open(bundles["1.0.0"]).manifest


def test_tampered_bundle_is_refused_and_nothing_changes(bundles, tmp_path):
    root = tmp_path / "store"
    store = BundleStore(root)
    store.install(bundles["1.0.0"])
    tampered = shutil.copytree(bundles["1.1.0"], tmp_path / "tampered")
    model_file = tampered / Bundle.open(tampered).variant().files[0].path
    data = bytearray(model_file.read_bytes())
    data[len(data) // 2] ^= 0x01
    model_file.write_bytes(bytes(data))

    with pytest.raises(BundleError, match="modified or corrupted"):
        store.install(tampered)
    assert store.list() == [InstalledModel(NAME, "1.0.0", None, ("1.0.0",))]
    assert store.active(NAME).manifest.version == "1.0.0"
    assert not list((root / ".staging").iterdir())


def test_duplicate_version_identical_is_a_no_op_different_is_refused(bundles, synthetic_bundle, tmp_path):
    store = BundleStore(tmp_path / "store")
    store.install(bundles["1.0.0"])
    assert store.install(bundles["1.0.0"]) == InstalledModel(NAME, "1.0.0", None, ("1.0.0",))
    other = synthetic_bundle(tmp_path / "other", version="1.0.0", created_by="someone else").root
    with pytest.raises(StoreError, match=r"1\.0\.0 is already installed with different contents"):
        store.install(other)


def test_downgrade_is_refused_unless_allowed(bundles, tmp_path):
    store = BundleStore(tmp_path / "store")
    store.install(bundles["1.1.0"])
    with pytest.raises(StoreError, match=r"1\.0\.0 is older than the active version 1\.1\.0"):
        store.install(bundles["1.0.0"])
    assert store.list()[0].versions == ("1.1.0",)
    assert store.install(bundles["1.0.0"], allow_downgrade=True).active == "1.0.0"


def test_version_order_is_semantic():
    ordered = ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-beta", "1.0.0", "1.2.0-rc.1", "1.2.0+build.7", "1.10.0"]
    assert sorted(reversed(ordered), key=version_key) == ordered


def test_check_sees_the_staged_copy_and_can_refuse(bundles, tmp_path):
    root = tmp_path / "store"
    store = BundleStore(root)
    seen: list[Path] = []

    def refuse(bundle: Bundle) -> bool:
        seen.append(bundle.root)
        return False

    def fail(bundle: Bundle) -> None:
        raise AccuracyGateError("golden set off by 0.2")

    with pytest.raises(StoreError, match=f"install check refused {NAME} 1.0.0"):
        store.install(bundles["1.0.0"], check=refuse)
    assert seen[0].is_relative_to(root / ".staging")  # the copy that is kept, not the caller's directory
    with pytest.raises(AccuracyGateError):
        store.install(bundles["1.0.0"], check=fail)
    assert store.list() == [] and not list((root / ".staging").iterdir())
    assert store.install(bundles["1.0.0"], check=lambda b: True).active == "1.0.0"


def test_lock_keeps_writers_apart_and_recovery_off_live_staging(bundles, tmp_path):
    root = tmp_path / "store"
    BundleStore(root)
    live = root / ".staging" / "install-live"
    live.mkdir()
    with open(root / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another writer at work
        store = BundleStore(root, lock_timeout=0.2)
        assert live.exists()  # recovery left the live writer's staging alone
        with pytest.raises(StoreError, match="is busy"):
            store.install(bundles["1.0.0"])
    BundleStore(root)
    assert not live.exists()  # lock free: leftovers are debris


@pytest.fixture(scope="module")
def store_with_1_0(bundles, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("crash") / "store"
    BundleStore(root).install(bundles["1.0.0"])
    return root


_INSTALL = (
    "import sys; from edge_sdk.store import BundleStore; "
    "BundleStore(sys.argv[1]).install(sys.argv[2], check=lambda bundle: True)"
)


@pytest.mark.parametrize("step", STEPS)
def test_sigkill_at_every_install_step_leaves_old_or_new_active(step, bundles, store_with_1_0, tmp_path):
    root = tmp_path / "store"
    shutil.copytree(store_with_1_0, root, symlinks=True)
    env = {**os.environ, CRASH_ENV: step}
    proc = subprocess.run(
        [sys.executable, "-c", _INSTALL, str(root), str(bundles["1.1.0"])],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == -signal.SIGKILL, f"never reached step {step!r}: {proc.stderr}"
    model = root / "models" / NAME
    debris = [*(root / ".staging").iterdir(), *model.glob("*.tmp-*")]
    if step in ("copying", "staged", "verified", "checked", "synced", "renamed", "previous-tmp", "current-tmp"):
        assert debris, "the crash should have left something for recovery to clean"

    store = BundleStore(root)  # recovers
    expected = "1.1.0" if step == "activated" else "1.0.0"
    assert _link(root, "current") == f"versions/{expected}"
    assert store.active(NAME).manifest.version == expected  # and every file of it verifies
    assert not list((root / ".staging").iterdir())
    assert not list(model.glob("*.tmp-*"))
    # the store stays usable: retrying the same install finishes it
    assert store.install(bundles["1.1.0"]) == InstalledModel(NAME, "1.1.0", "1.0.0", ("1.0.0", "1.1.0"))


_ROLLBACK = f"import sys; from edge_sdk.store import BundleStore; BundleStore(sys.argv[1]).rollback({NAME!r})"


@pytest.mark.parametrize("step", ["current-tmp", "previous-tmp"])
def test_sigkill_during_rollback_leaves_one_version_active(step, bundles, store_with_1_0, tmp_path):
    root = tmp_path / "store"
    shutil.copytree(store_with_1_0, root, symlinks=True)
    BundleStore(root).install(bundles["1.1.0"])
    proc = subprocess.run([sys.executable, "-c", _ROLLBACK, str(root)], env={**os.environ, CRASH_ENV: step}, timeout=60)
    assert proc.returncode == -signal.SIGKILL
    store = BundleStore(root)
    expected = "1.1.0" if step == "current-tmp" else "1.0.0"  # current is switched before previous
    assert store.active(NAME).manifest.version == expected
    assert not list((root / "models" / NAME).glob("*.tmp-*"))
