"""A real OpenSSH server on loopback that plays the board, and signed bundle versions to flash onto it.

The "board" is this machine: the remote command is this interpreter running this checkout's edge-sdk.
sshd comes from Debian's openssh-server, installed here when missing (tests/system_packages.py: as root or with
password-less sudo, with apt); else the tests skip (fail under CI=true).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from system_packages import ensure_package  # tests/ is on sys.path (tests/conftest.py)

from edge_sdk.apps.flash import FlashOptions
from edge_sdk.apps.flash.loopback import SSHD, LoopbackSSHD, free_port, start_sshd
from edge_sdk.bundle import Bundle
from edge_sdk.bundle.signing import generate_keypair, write_signature
from edge_sdk.errors import DeviceError


def _ensure_sshd() -> None:
    ensure_package(SSHD.exists, "openssh-server", "needs OpenSSH's /usr/sbin/sshd")


class Board(LoopbackSSHD):
    def options(self, **changes: object) -> FlashOptions:
        """The tests skip the golden set on the board unless they are about it: digests are still checked."""
        return super().options(**{"device_check": False, **changes})


@pytest.fixture(scope="session")
def sshd(tmp_path_factory) -> Board:
    _ensure_sshd()
    try:
        server = start_sshd(tmp_path_factory.mktemp("sshd"))
    except DeviceError as exc:
        pytest.fail(str(exc))
    yield Board(**vars(server))
    server.stop()


@pytest.fixture
def unused_port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def signing_keys(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("flash-keys")
    ours, _ = generate_keypair(root / "release.key")
    theirs, _ = generate_keypair(root / "other.key")
    return {"key": root / "release.key", "pub": ours, "other_pub": theirs}


@pytest.fixture(scope="session")
def releases(onnx_bundle, tmp_path_factory, signing_keys) -> dict[str, Path]:
    """digits-cnn 1.0.0 and 1.1.0 signed with our key, and 1.2.0 unsigned (directories)."""
    base = tmp_path_factory.mktemp("flash-bundles")
    out = {}
    for version, signed in (("1.0.0", True), ("1.1.0", True), ("1.2.0", False)):
        dest = shutil.copytree(onnx_bundle.root, base / version)
        manifest = dest / "manifest.json"
        manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "version": version}, indent=2))
        if signed:
            write_signature(dest, Bundle.open(dest).manifest, signing_keys["key"])
        out[version] = dest
    return out
