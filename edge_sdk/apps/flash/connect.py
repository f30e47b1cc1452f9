"""Open the transport a target names: a mounted card's directory, or a board over SSH."""

from __future__ import annotations

from pathlib import Path

from edge_sdk.apps.flash.ssh import SSHTransport
from edge_sdk.apps.flash.targets import Scheme, Target
from edge_sdk.apps.flash.transport import DirTransport, Transport
from edge_sdk.errors import DeviceError


def open_transport(
    target: Target, *, identity: Path | None, known_hosts: Path | None, accept_new_host: bool, remote_cmd: str
) -> Transport:
    """Connect to a target (DeviceError when it cannot be reached)."""
    if target.scheme is Scheme.DIR:
        if not Path(target.store).parent.is_dir():
            raise DeviceError(f"{target.label}: {Path(target.store).parent} does not exist (is the card mounted?)")
        return DirTransport(target)
    return SSHTransport(
        target, identity=identity, known_hosts=known_hosts, accept_new_host=accept_new_host, remote_cmd=remote_cmd
    )
