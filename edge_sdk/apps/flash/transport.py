"""How the flasher reaches a board: files (sized, appended from an offset, renamed) and commands.

`Transport` is the interface; `DirTransport` writes to a mounted store (an SD card) and runs the device
steps with this machine's edge-sdk; `SSHTransport` (flash/ssh.py) does both over one SSH connection.
"""

from __future__ import annotations

import os
import subprocess
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edge_sdk.apps.flash.targets import Target
from edge_sdk.errors import ConfigError, DeviceError

CHUNK = 32 * 1024  # SFTP's largest write; also the progress granularity
Sent = Callable[[int], None]  # called with the bytes of each chunk once it is handed to the device


@dataclass(frozen=True)
class Completed:
    returncode: int
    stdout: str
    stderr: str


class Transport(ABC):
    """One open connection to one device. Paths are absolute POSIX paths on the device."""

    def __init__(self, target: Target) -> None:
        self.target = target

    @abstractmethod
    def size(self, path: str) -> int | None:
        """The size of a regular file, or None when there is none."""

    @abstractmethod
    def send(self, local: Path, remote: str, offset: int, sent: Sent) -> None:
        """Write `local` from byte `offset` on into `remote`, keeping the first `offset` bytes there."""

    @abstractmethod
    def rename(self, src: str, dst: str) -> None: ...

    @abstractmethod
    def remove(self, path: str) -> None: ...

    @abstractmethod
    def makedirs(self, path: str) -> None: ...

    @abstractmethod
    def readlink(self, path: str) -> str | None: ...

    @abstractmethod
    def run(self, args: list[str], timeout: float) -> Completed:
        """Run `edge-sdk ARGS...` on the device."""

    @abstractmethod
    def http_status(self, url: str, timeout: float) -> int:
        """GET `url` as the device itself sees it; the HTTP status."""

    def close(self) -> None:  # noqa: B027 - most transports hold nothing
        pass

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DirTransport(Transport):
    """A store on a mounted card. The device steps run here, with this interpreter's edge-sdk."""

    def size(self, path: str) -> int | None:
        p = Path(path)
        return p.stat().st_size if p.is_file() and not p.is_symlink() else None

    def send(self, local: Path, remote: str, offset: int, sent: Sent) -> None:
        try:
            with local.open("rb") as src, open(remote, "r+b" if offset else "wb") as dst:
                src.seek(offset)
                dst.seek(offset)
                dst.truncate()
                while chunk := src.read(CHUNK):
                    dst.write(chunk)
                    sent(len(chunk))
                dst.flush()
                os.fsync(dst.fileno())  # a card may be pulled right after: the bytes must be on it
        except OSError as exc:
            raise DeviceError(f"{self.target.label}: writing {remote!r} failed: {exc.strerror or exc}") from None

    def rename(self, src: str, dst: str) -> None:
        os.replace(src, dst)

    def remove(self, path: str) -> None:
        Path(path).unlink(missing_ok=True)

    def makedirs(self, path: str) -> None:
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as exc:
            raise DeviceError(f"{self.target.label}: cannot create {path!r}: {exc.strerror or exc}") from None

    def readlink(self, path: str) -> str | None:
        try:
            return os.readlink(path)
        except OSError:
            return None

    def http_status(self, url: str, timeout: float) -> int:
        raise ConfigError(f"{self.target.label} is a mounted store: it runs no daemon to health-check")

    def run(self, args: list[str], timeout: float) -> Completed:
        try:
            done = subprocess.run(
                [sys.executable, "-m", "edge_sdk.cli", *args], capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            raise DeviceError(f"{self.target.label}: `edge-sdk {args[0]}` took over {timeout:g} s") from None
        return Completed(done.returncode, done.stdout, done.stderr)
