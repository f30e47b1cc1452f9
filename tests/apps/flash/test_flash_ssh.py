"""Flashing over a real SSH connection (OpenSSH on loopback): install, resume, refusals, health and rollback."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tarfile
import threading
import time

import pytest

from edge_sdk.apps.flash import Stage, flash_many, flash_one, parse_target, prepare
from edge_sdk.apps.flash.loopback import start_sshd
from edge_sdk.bundle import Bundle
from edge_sdk.bundle.files import sha256_file
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


def test_copy_cut_mid_way_resumes_where_it_stopped(sshd, release, tmp_path):
    store = tmp_path / "store"
    target = parse_target(sshd.url(store))
    part = store / ".incoming" / f"{release.remote_name}.part"
    cut: list[int] = []

    def cut_half_way(_target, stage, done, total):
        if stage is Stage.UPLOAD and done >= total // 2 and not cut:
            deadline = time.monotonic() + 5  # let the board write some bytes, then kill its SSH session
            while not (part.exists() and part.stat().st_size) and time.monotonic() < deadline:
                time.sleep(0.01)
            cut.append(sshd.cut_connections())

    first = flash_one(release, target, sshd.options(activate=True), cut_half_way)
    assert cut and cut[0] > 0
    assert not first.ok and first.stage is Stage.UPLOAD
    assert "connection failed while copying" in first.message
    have = part.stat().st_size
    assert 0 < have < release.size
    assert BundleStore(store).list() == []  # nothing half-installed

    events = []
    second = flash_one(release, target, sshd.options(activate=True), lambda *e: events.append(e[1:]))
    assert second.ok, second.message
    assert second.sent_bytes == release.size - have < release.size
    assert events[0] == (Stage.CONNECT, 0, release.size)
    assert (Stage.UPLOAD, have, release.size) in events  # the bar starts where the copy stopped
    assert events[-1] == (Stage.DONE, release.size, release.size)  # and ends full
    assert f"resumed at byte {have} of {release.size}" in second.log
    installed = BundleStore(store).active(NAME)  # opening it re-checks every digest
    assert installed.manifest == release.manifest
    assert sha256_file(installed.root / "manifest.json") == sha256_file(
        Bundle.open(release.archive).root / "manifest.json"
    )


def test_cancelled_flash_stops_every_copy_and_the_next_one_resumes(sshd, release, tmp_path):
    targets = [parse_target(sshd.url(tmp_path / "a")), parse_target(f"dir://{tmp_path / 'card'}")]
    cancel = threading.Event()

    def cancel_at_the_first_chunk(_target, stage, done, _total):
        if stage is Stage.UPLOAD and done:
            cancel.set()  # what Ctrl-C does in the CLI

    results = flash_many(release, targets, sshd.options(activate=True), cancel_at_the_first_chunk, cancel)
    assert [(r.ok, r.stage) for r in results] == [(False, Stage.UPLOAD)] * 2
    assert all("cancelled" in r.message and r.sent_bytes < release.size for r in results)
    assert BundleStore(tmp_path / "a").list() == [] and BundleStore(tmp_path / "card").list() == []
    parts = [tmp_path / store / ".incoming" / f"{release.remote_name}.part" for store in ("a", "card")]
    have = [p.stat().st_size if p.exists() else 0 for p in parts]  # a board cancelled before its copy has none
    assert any(have) and all(n < release.size for n in have)

    again = flash_many(release, targets, sshd.options(activate=True))
    assert all(r.ok for r in again), [r.message for r in again]
    assert [r.sent_bytes for r in again] == [release.size - n for n in have]


def test_corrupted_copy_on_the_board_is_refused_there_and_copied_afresh(sshd, release, tmp_path):
    store = tmp_path / "store"
    target = parse_target(sshd.url(store))
    with tarfile.open(release.archive) as tar:
        model = next(m for m in tar.getmembers() if m.name.endswith("model.onnx"))
    damaged = bytearray(release.archive.read_bytes())
    damaged[model.offset_data + model.size // 2] ^= 0xFF  # one flipped bit in a weight file
    prefix = model.offset_data + model.size
    (store / ".incoming").mkdir(parents=True)
    (store / ".incoming" / f"{release.remote_name}.part").write_bytes(damaged[:prefix])

    refused = flash_one(release, target, sshd.options(activate=True))
    assert not refused.ok and refused.stage is Stage.INSTALL
    assert refused.sent_bytes == release.size - prefix  # the damaged prefix was resumed, not re-sent
    assert "the device refused the bundle" in refused.message
    assert "modified or corrupted" in refused.message
    assert BundleStore(store).list() == []
    assert _leftovers(store) == []  # the bad copy is deleted, so it is not resumed again

    again = flash_one(release, target, sshd.options(activate=True))
    assert again.ok and again.sent_bytes == release.size
    assert BundleStore(store).active(NAME).manifest.version == "1.0.0"


@pytest.mark.parametrize(
    ("version", "device_key", "configured", "why"),
    [
        ("1.0.0", "other_pub", True, r"signed by key [0-9a-f]{16}, which is not trusted here"),
        ("1.2.0", "pub", True, "is not signed; this device accepts only bundles signed by a trusted key"),
        ("1.0.0", "other_pub", False, r"signed by key [0-9a-f]{16}, which is not trusted here"),
    ],
    ids=["wrong-key", "unsigned", "wrong-key-named-by-flash"],
)
def test_board_with_trusted_keys_refuses_wrongly_signed_and_unsigned_bundles(
    sshd, releases, signing_keys, tmp_path, version, device_key, configured, why
):
    """The board's keys: configured in its store (`trusted-keys/`), or named on the board by --device-trust."""
    store = tmp_path / "store"
    options = sshd.options(activate=True)
    if configured:
        (store / "trusted-keys").mkdir(parents=True)
        shutil.copy(signing_keys[device_key], store / "trusted-keys" / "release.pub")
    else:
        options = sshd.options(activate=True, device_trust=(str(signing_keys[device_key]),))
    result = flash_one(prepare(releases[version], tmp_path), parse_target(sshd.url(store)), options)
    assert not result.ok and result.stage is Stage.INSTALL
    assert re.search(why, result.message), result.message
    assert BundleStore(store).list() == []


def test_failed_health_check_rolls_back_to_the_previous_version(sshd, releases, tmp_path, unused_port):
    store = tmp_path / "store"
    BundleStore(store).install(releases["1.0.0"])
    dead = f"http://127.0.0.1:{unused_port}/health/ready"  # no daemon answers there
    options = sshd.options(activate=True, health_url=dead, health_timeout_s=1.5)
    result = flash_one(prepare(releases["1.1.0"], tmp_path), parse_target(sshd.url(store)), options)
    assert not result.ok and result.stage is Stage.HEALTH
    assert result.message.startswith("health check failed")
    assert result.message.endswith("rolled back to 1.0.0")
    assert result.active == "1.0.0"
    assert BundleStore(store).list() == [InstalledModel(NAME, "1.0.0", "1.1.0", ("1.0.0", "1.1.0"))]


def test_health_check_against_the_boards_daemon_passes(sshd, releases, tmp_path, unused_port):
    store = tmp_path / "store"
    BundleStore(store).install(releases["1.0.0"])
    port = unused_port
    daemon = subprocess.Popen(
        [sys.executable, "-m", "edge_sdk.cli", "serve", "--store", str(store), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        options = sshd.options(activate=True, health_url=f"http://127.0.0.1:{port}/health/ready")
        result = flash_one(prepare(releases["1.1.0"], tmp_path), parse_target(sshd.url(store)), options)
        assert result.ok, result.message
        assert result.active == "1.1.0"
        assert BundleStore(store).list() == [InstalledModel(NAME, "1.1.0", "1.0.0", ("1.0.0", "1.1.0"))]
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)


@pytest.mark.usefixtures("sshd")  # installs sshd or skips
def test_board_refusing_port_forwarding_fails_the_health_check_at_once_and_rolls_back(releases, tmp_path, unused_port):
    hardened = start_sshd(tmp_path / "sshd", forwarding=False)
    try:
        store = tmp_path / "store"
        BundleStore(store).install(releases["1.0.0"])
        url = f"http://127.0.0.1:{unused_port}/health/ready"
        options = hardened.options(activate=True, device_check=False, health_url=url, health_timeout_s=20)
        started = time.monotonic()
        result = flash_one(prepare(releases["1.1.0"], tmp_path), parse_target(hardened.url(store)), options)
        assert time.monotonic() - started < 15  # no waiting out the timeout for what cannot change
        assert not result.ok and result.stage is Stage.HEALTH
        assert "refuses port forwarding" in result.message and "AllowTcpForwarding" in result.message
        assert result.message.endswith("rolled back to 1.0.0")
        assert BundleStore(store).active(NAME).manifest.version == "1.0.0"
    finally:
        hardened.stop()


def test_unreachable_board_is_reported_and_the_others_are_flashed(sshd, release, tmp_path, unused_port):
    targets = [
        parse_target(sshd.url(tmp_path / "a")),
        parse_target(f"ssh://{sshd.user}@127.0.0.1:{unused_port}{tmp_path / 'b'}"),  # nothing listens
        parse_target(f"dir://{tmp_path / 'card'}"),
    ]
    results = flash_many(release, targets, sshd.options(activate=True))
    assert [r.ok for r in results] == [True, False, True]
    assert results[1].stage is Stage.CONNECT and "unreachable" in results[1].message
    assert BundleStore(tmp_path / "a").active(NAME).manifest.version == "1.0.0"
    assert BundleStore(tmp_path / "card").active(NAME).manifest.version == "1.0.0"
    assert not (tmp_path / "b").exists()


def test_unknown_host_key_is_refused_unless_accepted(sshd, release, tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text("")
    target = parse_target(sshd.url(tmp_path / "store"))
    refused = flash_one(release, target, sshd.options(known_hosts=known))
    assert not refused.ok and refused.stage is Stage.CONNECT
    assert "host key is not in known_hosts" in refused.message
    known.write_text("# my boards\n")
    accepted = flash_one(release, target, sshd.options(known_hosts=known, accept_new_host=True))
    assert accepted.ok, accepted.message
    host_key = sshd.known_hosts.read_text().split()[1:3]
    assert known.read_text() == f"# my boards\n[127.0.0.1]:{sshd.port} {' '.join(host_key)}\n"  # pinned, appended
    assert flash_one(release, target, sshd.options(known_hosts=known)).ok  # known from now on

    fresh = tmp_path / "new" / "known_hosts"  # no file yet: created
    assert flash_one(release, target, sshd.options(known_hosts=fresh, accept_new_host=True)).ok
    assert fresh.read_text() == f"[127.0.0.1]:{sshd.port} {' '.join(host_key)}\n"


def test_board_without_edge_sdk_is_told_what_to_install(sshd, release, tmp_path):
    result = flash_one(release, parse_target(sshd.url(tmp_path / "store")), sshd.options(remote_cmd="/opt/no/edge-sdk"))
    assert not result.ok and result.stage is Stage.INSTALL
    assert "is edge-sdk installed on the board? pip install 'edge-sdk[onnx]'" in result.message
