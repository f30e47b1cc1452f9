"""Flashing over a real SSH connection (OpenSSH on loopback): install, resume, refusals, health and rollback."""

from __future__ import annotations

import pytest

from edge_sdk.flash import Stage, flash_one, parse_target, prepare
from edge_sdk.store import BundleStore, InstalledModel

NAME = "digits-cnn"
pytestmark = pytest.mark.slow


@pytest.fixture
def release(releases, tmp_path):
    return prepare(releases["1.0.0"], tmp_path)


def _leftovers(store) -> list[str]:
    incoming = store / ".incoming"
    return sorted(p.name for p in incoming.iterdir()) if incoming.is_dir() else []


def test_flash_copies_verifies_on_device_installs_and_activates(sshd, release, signing_keys, tmp_path):
    store = tmp_path / "board" / "store"
    target = parse_target(sshd.url(store))
    events = []
    options = sshd.options(activate=True, trust=(signing_keys["pub"],), device_check=True)
    result = flash_one(release, target, options, lambda *e: events.append(e[1:]))

    assert result.ok, result.message
    assert (result.stage, result.sent_bytes, result.total_bytes) == (Stage.DONE, release.size, release.size)
    assert result.active == "1.0.0"
    assert BundleStore(store).list() == [InstalledModel(NAME, "1.0.0", None, ("1.0.0",))]
    assert BundleStore(store).active(NAME).manifest == release.manifest
    assert _leftovers(store) == []  # the archive and the key copy are gone once installed
    golden = [line for line in result.log if "golden set" in line]  # the device re-ran every variant's golden set
    assert len(golden) == len(release.manifest.variants) and all("device: ok" in line for line in golden)
    stages = [stage for stage, _, _ in events]
    assert stages.index(Stage.CONNECT) < stages.index(Stage.UPLOAD) < stages.index(Stage.INSTALL)
    assert (Stage.UPLOAD, release.size, release.size) in events

    # flashing the same release again is a no-op on the device, and copies it again (the copy was consumed)
    again = flash_one(release, target, options)
    assert again.ok and BundleStore(store).list() == [InstalledModel(NAME, "1.0.0", None, ("1.0.0",))]
