"""A throwaway OpenSSH server on 127.0.0.1 that plays a board: for the tests, the benchmark, and trying
`edge-sdk flash` without one. Its own host key, user key and config live in a work directory; it serves
only this machine's current user, and the "board's" edge-sdk is this interpreter with this checkout.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import edge_sdk
from edge_sdk.apps.flash.flasher import FlashOptions
from edge_sdk.errors import DeviceError

SSHD = Path("/usr/sbin/sshd")
_CHECKOUT = Path(edge_sdk.__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def this_edge_sdk() -> str:
    """The command that runs this very edge-sdk, for a board that is this machine."""
    return f"env PYTHONPATH={shlex.quote(str(_CHECKOUT))} {shlex.quote(sys.executable)} -m edge_sdk.cli"


@dataclass
class LoopbackSSHD:
    port: int
    user: str
    identity: Path  # the user's private key
    known_hosts: Path  # holds this server's host key
    proc: subprocess.Popen[bytes]
    remote_cmd: str = field(default_factory=this_edge_sdk)

    def url(self, store: Path | str) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}{store}"

    def options(self, **changes: object) -> FlashOptions:
        """Flash options that log in to this server and run this edge-sdk as the board's."""
        base: dict[str, object] = dict(identity=self.identity, known_hosts=self.known_hosts, remote_cmd=self.remote_cmd)
        return FlashOptions(**{**base, **changes})  # type: ignore[arg-type]

    def cut_connections(self) -> int:
        """SIGKILL every session process (sshd's per-connection children): a connection cut for real."""
        victims = _descendants(self.proc.pid)
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return len(victims)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


def start_sshd(workdir: Path, *, binary: Path = SSHD, timeout_s: float = 15.0, forwarding: bool = True) -> LoopbackSSHD:
    """Start `sshd -D` on a free loopback port with fresh keys under `workdir`; DeviceError if it does not come up.

    `forwarding=False` plays a hardened board that refuses TCP forwarding.
    """
    if not binary.exists():
        raise DeviceError(f"{binary} is missing: install OpenSSH's server (Debian: apt-get install openssh-server)")
    workdir.mkdir(parents=True, exist_ok=True)
    for name in ("host_key", "user_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(workdir / name)], check=True)
    shutil.copy(workdir / "user_key.pub", workdir / "authorized_keys")
    port = free_port()
    config = workdir / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {workdir / 'host_key'}\n"
        f"AuthorizedKeysFile {workdir / 'authorized_keys'}\nPidFile {workdir / 'sshd.pid'}\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\nUsePAM no\nStrictModes no\n"
        # internal-sftp runs inside the session process: killing a session cuts its copy too
        f"AllowTcpForwarding {'yes' if forwarding else 'no'}\nSubsystem sftp internal-sftp\n"
    )
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
    log_path = workdir / "sshd.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([str(binary), "-D", "-e", "-f", str(config)], stdout=log, stderr=log)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise DeviceError(f"sshd did not start: {log_path.read_text()[-800:]}") from None
            time.sleep(0.1)
    kind, key = (workdir / "host_key.pub").read_text().split()[:2]
    known_hosts = workdir / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {kind} {key}\n")
    return LoopbackSSHD(port, getpass.getuser(), workdir / "user_key", known_hosts, proc)


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
