"""A real OpenSSH server on loopback that plays the board, and signed bundle versions to flash onto it.

The "board" is this machine: the remote command is this interpreter running this checkout's edge-sdk.
sshd comes from Debian's openssh-server, installed here when missing (as root, with apt); else the tests skip.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge_sdk.bundle import Bundle
from edge_sdk.bundle.signing import generate_keypair, write_signature
from edge_sdk.flash import FlashOptions

SSHD = Path("/usr/sbin/sshd")
REPO = Path(__file__).resolve().parents[2]
REMOTE_CMD = f"env PYTHONPATH={shlex.quote(str(REPO))} {shlex.quote(sys.executable)} -m edge_sdk.cli"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ensure_sshd() -> Path:
    if SSHD.exists():
        return SSHD
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("needs OpenSSH's /usr/sbin/sshd: run `apt-get install openssh-server` as root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "openssh-server"]
    done = subprocess.run(install, capture_output=True, text=True, env=env, timeout=900)
    if done.returncode != 0:  # a fresh machine may have no package lists yet
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env, timeout=900)
        done = subprocess.run(install, capture_output=True, text=True, env=env, timeout=900)
    if not SSHD.exists():
        pytest.fail(f"installing openssh-server failed: {done.stderr[-800:]}")
    return SSHD


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@dataclass
class SSHServer:
    port: int
    user: str
    identity: Path
    known_hosts: Path
    proc: subprocess.Popen[bytes]
    remote_cmd: str = REMOTE_CMD  # the board's edge-sdk: this interpreter with this checkout

    def url(self, store: Path) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}{store}"

    def options(self, **changes: object) -> FlashOptions:
        base: dict[str, object] = dict(
            identity=self.identity, known_hosts=self.known_hosts, remote_cmd=self.remote_cmd, device_check=False
        )
        return FlashOptions(**{**base, **changes})  # type: ignore[arg-type]

    def cut_connections(self) -> int:
        """SIGKILL every session process (sshd's per-connection children and their sftp-server): a real cut."""
        victims = _descendants(self.proc.pid)
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return len(victims)


@pytest.fixture(scope="session")
def sshd(tmp_path_factory) -> SSHServer:
    binary = _ensure_sshd()
    root = tmp_path_factory.mktemp("sshd")
    for name in ("host_key", "user_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / name)], check=True)
    shutil.copy(root / "user_key.pub", root / "authorized_keys")
    port = free_port()
    config = root / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {root / 'host_key'}\n"
        f"AuthorizedKeysFile {root / 'authorized_keys'}\nPidFile {root / 'sshd.pid'}\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\nUsePAM no\nStrictModes no\n"
        "AllowTcpForwarding yes\nSubsystem sftp internal-sftp\n"
    )
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
    log = (root / "sshd.log").open("wb")
    proc = subprocess.Popen([str(binary), "-D", "-e", "-f", str(config)], stdout=log, stderr=log)
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"sshd did not start: {(root / 'sshd.log').read_text()[-800:]}")
            time.sleep(0.1)
    host_key = (root / "host_key.pub").read_text().split()
    known_hosts = root / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    yield SSHServer(port, getpass.getuser(), root / "user_key", known_hosts, proc)
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


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
