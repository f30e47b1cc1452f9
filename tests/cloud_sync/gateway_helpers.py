"""Helpers for the cloud tests: a real gateway on loopback (uvicorn in a thread), keys, uploads."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn

from cloud_sync.devices import read_key_file
from cloud_sync.gateway import GatewayConfig, build_gateway
from edge_sdk.daemon.pool import BundleSource

DEVICE_KEY = "device-key-pi-kitchen-0001"
OTHER_KEY = "device-key-jetson-garage-02"
PUBLISHER_KEY = "publisher-key-ci-release-0003"
VERSIONS = ("1.0.0", "1.1.0", "2.0.0")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve_app(app, port: int | None = None) -> Iterator[str]:
    """Serve an ASGI app with uvicorn on loopback until the block ends."""
    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "the server did not start within 20 s"
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def gateway_config(key_files: dict[str, Path], registry: Path, **options) -> GatewayConfig:
    return GatewayConfig(
        devices=read_key_file(key_files["devices"]),
        publishers=read_key_file(key_files["publishers"], what="publisher key file"),
        registry_dir=registry,
        **options,
    )


@contextmanager
def running_gateway(source: BundleSource, config: GatewayConfig) -> Iterator[str]:
    port = free_port()
    config = config.model_copy(update={"daemon": config.daemon.model_copy(update={"port": port})})
    app = build_gateway(source, config)
    try:
        with serve_app(app, port) as url:
            yield url
    finally:
        app.state.pool.close()


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def publish(url: str, path: Path, key: str = PUBLISHER_KEY) -> httpx.Response:
    with path.open("rb") as fh:
        return httpx.post(f"{url}/v1/registry/bundles", content=fh, headers=auth(key), timeout=60)
