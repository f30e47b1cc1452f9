"""Per-device keys at the gateway: who is calling, recorded for handlers, logs and metrics.

A key file holds one `<id> <key>` pair a line ('#' comments and blank lines ignored); a device's line may add
its groups for staged rollouts: `<id> <key> groups=kitchen,eu`. Device keys may call
the OpenAI routes, send telemetry and pull from the registry; publisher keys may also publish bundles.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edge_sdk.errors import ConfigError
from edge_sdk.metrics import Metrics

log = logging.getLogger("edge_sdk.gateway")

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
MIN_KEY_CHARS = 16
DEVICE, PUBLISHER = "device", "publisher"


@dataclass(frozen=True)
class Caller:
    id: str
    role: str  # DEVICE or PUBLISHER


def is_valid_id(text: str) -> bool:
    """Device ids and group names: letters, digits, '.', '_', ':' or '-', up to 128 characters."""
    return bool(_ID.match(text))


@dataclass(frozen=True)
class KeyLine:
    id: str
    key: str
    groups: tuple[str, ...]  # device groups, for staged rollouts


def read_key_lines(path: Path, *, what: str = "device key file") -> list[KeyLine]:
    """The `<id> <key> [groups=a,b]` lines of a key file; refuses malformed lines, short keys and duplicates."""
    if not path.is_file():
        raise ConfigError(f"{what} {str(path)!r} does not exist")
    lines: list[KeyLine] = []
    ids: set[str] = set()
    keys: set[str] = set()
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        where = f"{what} {str(path)!r} line {number}"
        if len(parts) not in (2, 3) or (len(parts) == 3 and not parts[2].startswith("groups=")):
            raise ConfigError(f"{where}: expected '<id> <key>' or '<id> <key> groups=a,b', got {len(parts)} words")
        ident, key = parts[:2]
        groups = tuple(g for g in parts[2].removeprefix("groups=").split(",") if g) if len(parts) == 3 else ()
        if not _ID.match(ident):
            raise ConfigError(f"{where}: id {ident!r} must be letters, digits, '.', '_', ':' or '-'")
        if len(key) < MIN_KEY_CHARS:
            raise ConfigError(f"{where}: the key of {ident!r} is shorter than {MIN_KEY_CHARS} characters")
        if bad := [g for g in groups if not _ID.match(g)]:
            raise ConfigError(f"{where}: group {bad[0]!r} must be letters, digits, '.', '_', ':' or '-'")
        if ident in ids or key in keys:
            raise ConfigError(f"{where}: {'id ' + repr(ident) if ident in ids else 'a key'} appears twice")
        ids.add(ident)
        keys.add(key)
        lines.append(KeyLine(ident, key, groups))
    if not lines:
        raise ConfigError(f"{what} {str(path)!r} holds no '<id> <key>' line")
    return lines


def read_key_file(path: Path, *, what: str = "device key file") -> dict[str, str]:
    """`{key: id}` from a file of `<id> <key> [groups=a,b]` lines."""
    return {line.key: line.id for line in read_key_lines(path, what=what)}


def read_device_groups(path: Path) -> dict[str, tuple[str, ...]]:
    """`{id: groups}` of every device in a device key file (groups may be empty)."""
    return {line.id: line.groups for line in read_key_lines(path)}


class DeviceSeen(Protocol):
    """Where the gateway records that a device called (the rollouts' "seen within")."""

    def due(self, device: str) -> bool: ...

    def seen(self, device: str) -> None: ...


def caller_of(scope: Scope) -> Caller | None:
    """The authenticated caller of a request (None on public paths)."""
    caller = scope.get("state", {}).get("caller")
    return caller if isinstance(caller, Caller) else None


class DeviceAuth:
    """ASGI middleware: a known bearer key or 401; the caller goes into `request.state.caller`."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        devices: Mapping[str, str],
        publishers: Mapping[str, str],
        metrics: Metrics,
        public_paths: tuple[str, ...] = ("/health/live", "/health/ready"),
        seen: DeviceSeen | None = None,
    ) -> None:
        self.app, self.metrics, self.public_paths, self.seen = app, metrics, public_paths, seen
        self.callers = {key: Caller(ident, DEVICE) for key, ident in devices.items()}
        self.callers.update({key: Caller(ident, PUBLISHER) for key, ident in publishers.items()})
        metrics.describe("edge_gateway_requests_total", "counter", "gateway requests by calling device and status")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.public_paths:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        header = headers.get(b"authorization", b"").decode("latin-1")
        token = header[7:].strip() if header.lower().startswith("bearer ") else ""
        caller = self.callers.get(token)
        if caller is None:
            self.metrics.inc("edge_gateway_requests_total", device="unknown", status="401")
            log.warning("refused %s %s: missing or unknown device key", scope["method"], scope["path"])
            response = JSONResponse(
                {
                    "error": {
                        "message": "missing or unknown device key (Authorization: Bearer <device key>)",
                        "type": "authentication_error",
                        "param": None,
                        "code": None,
                    }
                },
                status_code=401,
            )
            await response(scope, receive, send)
            return
        if self.seen is not None and caller.role == DEVICE and self.seen.due(caller.id):
            await asyncio.to_thread(self.seen.seen, caller.id)  # a database write: off the event loop
        state = scope.setdefault("state", {})
        state["caller"], state["device_id"] = caller, caller.id  # device_id: what the idempotency store keys on
        status = 500
        start = time.monotonic()

        async def record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record)
        finally:
            self.metrics.inc("edge_gateway_requests_total", device=caller.id, status=str(status))
            log.info(
                "device=%s %s %s -> %d in %.3f s",
                caller.id,
                scope["method"],
                scope["path"],
                status,
                time.monotonic() - start,
                extra={
                    "event": "request",
                    "device": caller.id,
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "seconds": round(time.monotonic() - start, 4),
                },
            )
