"""A real OpenSSH server on loopback that plays the board, and signed bundle versions to flash onto it.

The "board" is this machine: the remote command is this interpreter running this checkout's edge-sdk.
sshd comes from Debian's openssh-server, installed here when missing (as root or with password-less sudo,
with apt); else the tests skip.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from edge_sdk.apps.flash import FlashOptions
from edge_sdk.apps.flash.loopback import SSHD, LoopbackSSHD, free_port, start_sshd
from edge_sdk.bundle import Bundle
from edge_sdk.bundle.signing import generate_keypair, write_signature
from edge_sdk.errors import DeviceError


def _as_root() -> list[str] | None:
    """How to run apt-get: directly as root, through password-less sudo (CI runners), or not at all."""
    if os.geteuid() == 0:
        return []
    if shutil.which("sudo") and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0:
        return ["sudo", "-n", "env", "DEBIAN_FRONTEND=noninteractive"]
    return None


def _ensure_sshd() -> None:
    if SSHD.exists():
        return
    root = _as_root()
    if root is None or not shutil.which("apt-get"):
        why = "needs OpenSSH's /usr/sbin/sshd: run `apt-get install openssh-server` as root"
        if os.environ.get("CI"):
            pytest.fail(why)  # CI must run the flash tests, never skip them quietly
        pytest.skip(why)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [*root, "apt-get", "install", "-y", "-q", "--no-install-recommends", "openssh-server"]
    done = subprocess.run(install, capture_output=True, text=True, env=env, timeout=900)
    if done.returncode != 0:  # a fresh machine may have no package lists yet
        subprocess.run([*root, "apt-get", "update", "-q"], capture_output=True, env=env, timeout=900)
        done = subprocess.run(install, capture_output=True, text=True, env=env, timeout=900)
    if not SSHD.exists():
        pytest.fail(f"installing openssh-server failed: {done.stderr[-800:]}")


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
