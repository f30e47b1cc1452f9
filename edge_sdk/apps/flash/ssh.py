"""A board over SSH (paramiko): SFTP for files, exec for the device's own edge-sdk, a tunnel for health."""

from __future__ import annotations

import contextlib
import getpass
import shlex
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from edge_sdk.apps.flash.targets import Target
from edge_sdk.apps.flash.transport import CHUNK, Completed, Sent, Transport
from edge_sdk.errors import BackendUnavailableError, ConfigError, DeviceError

CONNECT_TIMEOUT_S = 10.0
KEEPALIVE_S = 15  # a board that vanishes is noticed instead of hanging a copy forever
SFTP_TIMEOUT_S = 60.0  # one SFTP request unanswered this long: the link is gone


def _paramiko() -> Any:
    try:
        import paramiko
    except ModuleNotFoundError as exc:
        raise BackendUnavailableError("flashing over ssh:// needs paramiko: pip install 'edge-sdk[flash]'") from exc
    return paramiko


_KNOWN_HOSTS_LOCK = threading.Lock()  # boards flashed in parallel may all be new


def _append_on_first_use(known_hosts: Path) -> Any:
    """Trust an unknown host key and pin it: one line appended to known_hosts, as OpenSSH's accept-new does."""
    policy: Any = _paramiko().MissingHostKeyPolicy

    class AppendOnFirstUse(policy):
        def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
            client.get_host_keys().add(hostname, key.get_name(), key)
            with _KNOWN_HOSTS_LOCK:
                known_hosts.parent.mkdir(parents=True, exist_ok=True)
                with known_hosts.open("a") as fh:
                    fh.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")

    return AppendOnFirstUse()


class SSHTransport(Transport):
    def __init__(
        self,
        target: Target,
        *,
        identity: Path | None = None,
        known_hosts: Path | None = None,
        accept_new_host: bool = False,
        remote_cmd: str = "edge-sdk",
    ) -> None:
        super().__init__(target)
        self._paramiko = paramiko = _paramiko()
        self._errors: tuple[type[BaseException], ...] = (OSError, EOFError, paramiko.SSHException)
        self.remote_cmd = remote_cmd
        self._client = client = paramiko.SSHClient()
        known = known_hosts or Path("~/.ssh/known_hosts").expanduser()
        if known.exists():
            client.get_host_keys().load(str(known))  # read only: paramiko's own save would rewrite the whole file
        client.set_missing_host_key_policy(_append_on_first_use(known) if accept_new_host else paramiko.RejectPolicy())
        user = target.user or getpass.getuser()
        if identity is not None and not identity.is_file():
            raise ConfigError(f"SSH identity {str(identity)!r} does not exist; give the private key file")
        try:
            client.connect(
                target.host,
                target.port,
                username=user,
                key_filename=str(identity) if identity else None,
                look_for_keys=identity is None,
                allow_agent=identity is None,
                timeout=CONNECT_TIMEOUT_S,
                banner_timeout=CONNECT_TIMEOUT_S,
                auth_timeout=CONNECT_TIMEOUT_S,
            )
        except paramiko.BadHostKeyException:
            client.close()
            raise DeviceError(
                f"{target.label}: the host key does not match the one in known_hosts: refusing to connect "
                "(if the board was re-installed, remove its old line from known_hosts)"
            ) from None
        except paramiko.AuthenticationException:
            client.close()
            how = f"identity {identity}" if identity else "the SSH agent and ~/.ssh keys"
            raise DeviceError(f"{target.label}: SSH login as {user!r} failed with {how}") from None
        except paramiko.SSHException as exc:
            client.close()
            if "known_hosts" in str(exc):
                raise DeviceError(
                    f"{target.label}: the board's host key is not in known_hosts; add it (ssh-keyscan) or pass "
                    "--accept-new-host-key to trust it on first use"
                ) from None
            raise DeviceError(f"{target.label}: SSH failed: {exc}") from None
        except OSError as exc:
            client.close()
            raise DeviceError(f"{target.label}: unreachable: {exc.strerror or exc}") from None
        transport = client.get_transport()
        assert transport is not None  # connect() succeeded
        transport.set_keepalive(KEEPALIVE_S)
        self._transport = transport
        try:
            self._sftp = self._open_sftp()
        except DeviceError:
            client.close()
            raise

    def _open_sftp(self) -> Any:
        with self._link("opening SFTP"):
            sftp = self._client.open_sftp()
            sftp.get_channel().settimeout(SFTP_TIMEOUT_S)
            return sftp

    @contextlib.contextmanager
    def _link(self, doing: str) -> Iterator[None]:
        """Turn what a dropped connection raises into one DeviceError that says what was going on."""
        try:
            yield
        except self._errors as exc:
            raise DeviceError(
                f"{self.target.label}: connection failed while {doing}: {exc or type(exc).__name__}"
            ) from None

    # ------------------------------------------------------------------------------------------ files
    def size(self, path: str) -> int | None:
        with self._link(f"reading {path}"):
            try:
                st = self._sftp.lstat(path)
            except FileNotFoundError:
                return None
        return st.st_size if st.st_mode is not None and stat.S_ISREG(st.st_mode) else None

    def send(self, local: Path, remote: str, offset: int, sent: Sent) -> None:
        with (
            self._link(f"copying to {remote}"),
            local.open("rb") as src,
            self._sftp.open(remote, "r+" if offset else "w") as dst,
        ):
            dst.set_pipelined(True)  # do not wait a round trip per chunk; errors surface at close
            src.seek(offset)
            dst.seek(offset)
            while chunk := src.read(CHUNK):
                dst.write(chunk)
                sent(len(chunk))

    def rename(self, src: str, dst: str) -> None:
        with self._link(f"renaming {src}"):
            self._sftp.posix_rename(src, dst)

    def remove(self, path: str) -> None:
        with self._link(f"removing {path}"), contextlib.suppress(FileNotFoundError):
            self._sftp.remove(path)

    def makedirs(self, path: str) -> None:
        with self._link(f"creating {path}"):
            current = ""
            for part in path.strip("/").split("/"):
                current += "/" + part
                try:
                    self._sftp.stat(current)
                except FileNotFoundError:
                    self._sftp.mkdir(current)

    def readlink(self, path: str) -> str | None:
        with self._link(f"reading {path}"):
            try:
                return str(self._sftp.readlink(path))
            except OSError:
                return None

    # ------------------------------------------------------------------------------------------ commands
    def run(self, args: list[str], timeout: float) -> Completed:
        command = f"{self.remote_cmd} {shlex.join(args)}"
        with self._link(f"running `edge-sdk {args[0]}`"):
            _stdin, stdout, stderr = self._client.exec_command(command, timeout=timeout)
            out = stdout.read().decode(errors="replace")
            err = stderr.read().decode(errors="replace")
            code = stdout.channel.recv_exit_status()
        return Completed(code, out, err)

    def http_status(self, url: str, timeout: float) -> int:
        """GET through a tunnel to the board, so a daemon bound to the board's loopback is reached too."""
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ConfigError(f"health URL {url!r} must be http://HOST:PORT/PATH as the board sees it")
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        with self._link(f"checking {url}"):
            try:
                channel = self._transport.open_channel(
                    "direct-tcpip", (parts.hostname, parts.port or 80), ("127.0.0.1", 0), timeout=timeout
                )
            except self._paramiko.ChannelException as exc:
                if exc.code == self._paramiko.common.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED:
                    raise ConfigError(
                        "the board's sshd refuses port forwarding, which the health check goes through: set "
                        "`AllowTcpForwarding local` (or yes) in its sshd_config, or flash without --health-url"
                    ) from None
                raise
            with channel:
                channel.settimeout(timeout)
                channel.sendall(f"GET {path} HTTP/1.0\r\nHost: {parts.netloc}\r\nConnection: close\r\n\r\n".encode())
                head = b""
                while b"\r\n" not in head and len(head) < 8192 and (piece := channel.recv(4096)):
                    head += piece
        status = head.split(b"\r\n", 1)[0].split()
        if len(status) < 2 or not status[1].isdigit():
            raise DeviceError(f"{url} answered without an HTTP status line: {head[:80]!r}")
        return int(status[1])

    def close(self) -> None:
        with contextlib.suppress(*self._errors):
            self._sftp.close()
        self._client.close()
