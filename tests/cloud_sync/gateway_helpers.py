"""Helpers for the cloud tests: a real gateway on loopback, keys, uploads."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn

from edge_sdk.apps.daemon.pool import BundleSource
from edge_sdk.apps.gateway.app import GatewayConfig, build_gateway
from edge_sdk.apps.gateway.devices import read_key_file

DEVICE_KEY = "device-key-pi-kitchen-0001"
OTHER_KEY = "device-key-jetson-garage-02"
PUBLISHER_KEY = "publisher-key-ci-release-0003"
VERSIONS = ("1.0.0", "1.1.0", "2.0.0")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gateway_config(key_files: dict[str, Path], registry: Path, **options) -> GatewayConfig:
    return GatewayConfig(
        devices=read_key_file(key_files["devices"]),
        publishers=read_key_file(key_files["publishers"], what="publisher key file"),
        registry_dir=registry,
        **options,
    )


@contextmanager
def serve_app(app, port: int | None = None) -> Iterator[str]:
    """Serve an ASGI app with uvicorn on loopback until the block ends."""
    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "the server did not start within 20 s"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextmanager
def running_gateway(source: BundleSource, config: GatewayConfig) -> Iterator[str]:
    """The gateway app in uvicorn on loopback."""
    app = build_gateway(source, config)
    try:
        with serve_app(app) as url:
            yield url
    finally:
        app.state.pool.close()


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def publish(url: str, path: Path, key: str = PUBLISHER_KEY) -> httpx.Response:
    with path.open("rb") as fh:
        return httpx.post(f"{url}/v1/registry/bundles", content=fh, headers=auth(key), timeout=60)


Allow = Callable[[bytes], tuple[bytes, bool]]  # a chunk -> what of it passes, and whether the connection goes on


def relay(src: socket.socket, dst: socket.socket, allow: Allow | None = None) -> None:
    """Copy bytes from `src` to `dst` until either side closes, or `allow` cuts the connection (both sockets
    closed after what it let through, as a network cut would)."""
    try:
        while data := src.recv(65536):
            passed, go_on = allow(data) if allow else (data, True)
            dst.sendall(passed)
            if not go_on:
                break
    except OSError:
        pass
    finally:
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


def relay_both_ways(client: socket.socket, server: socket.socket, from_server: Allow | None = None) -> None:
    """Two threads relaying a proxied connection: client to server, and server to client through `from_server`."""
    threading.Thread(target=relay, args=(client, server), daemon=True).start()
    threading.Thread(target=relay, args=(server, client, from_server), daemon=True).start()


class CuttingProxy:
    """A TCP proxy in front of a server that closes one connection after `cut_after` bytes came back on it.

    Counts what the server sent through it, so a test can see how much a resumed download transferred.
    """

    def __init__(self, target: str, cut_after: int) -> None:
        host, port = target.removeprefix("http://").split(":")
        self.target, self.cut_after = (host, int(port)), cut_after
        self.cut_done, self.bytes_after_cut = False, 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            relay_both_ways(client, server, from_server=self._from_server())

    def _from_server(self) -> Allow:
        """What the server sends on one connection gets through until `cut_after` bytes (once), then the cut."""
        seen = 0

        def allow(data: bytes) -> tuple[bytes, bool]:
            nonlocal seen
            with self._lock:
                if not self.cut_done and seen + len(data) >= self.cut_after:
                    self.cut_done = True
                    return data[: self.cut_after - seen], False
                if self.cut_done:
                    self.bytes_after_cut += len(data)
            seen += len(data)
            return data, True

        return allow


class Balancer:
    """A TCP load balancer on loopback: connections go round-robin to the replicas; a replica that refuses the
    connection (down) is skipped, as a balancer's health check would. A replica that dies mid-request cuts
    that connection: the client sees the error and retries."""

    def __init__(self, targets: list[str]) -> None:
        self.targets = [t.removeprefix("http://").split(":") for t in targets]
        self.picked: list[int] = []
        self._next = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._listener.close()

    def _connect(self) -> socket.socket | None:
        for _ in range(len(self.targets)):
            with self._lock:
                index = self._next
                self._next = (self._next + 1) % len(self.targets)
            host, port = self.targets[index]
            try:
                server = socket.create_connection((host, int(port)), timeout=2)
            except OSError:
                continue
            server.settimeout(None)
            self.picked.append(index)
            return server
        return None

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = self._connect()
            if server is None:
                client.close()
                continue
            relay_both_ways(client, server)
