"""Run the daemon with uvicorn: ready goes false on SIGTERM, in-flight requests drain, then exit."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from edge_sdk.apps.daemon.app import create_app
from edge_sdk.apps.daemon.config import DaemonConfig
from edge_sdk.apps.daemon.pool import BundleSource, ModelPool
from edge_sdk.errors import ConfigError
from edge_sdk.metrics import Metrics


def read_api_keys(path: Path) -> frozenset[str]:
    """One key a line; blank lines and '#' comments ignored."""
    if not path.is_file():
        raise ConfigError(f"API key file {str(path)!r} does not exist")
    keys = frozenset(
        line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")
    )
    if not keys:
        raise ConfigError(f"API key file {str(path)!r} holds no key")
    return keys


def read_cloud_key(path: Path) -> str:
    """This device's key at the cloud: the file's one key (same format as an API key file)."""
    keys = read_api_keys(path)
    if len(keys) != 1:
        raise ConfigError(f"cloud key file {str(path)!r} must hold exactly one key; it holds {len(keys)}")
    return next(iter(keys))


def default_budget(profile: str | None = None) -> int:
    """The memory budget of the profile served as (`--profile`), else of the detected host."""
    from device_profiles import load_profile

    return load_profile(profile or "host").budget_bytes


def build(source: BundleSource, config: DaemonConfig) -> FastAPI:
    metrics = Metrics()
    metrics.describe("edge_requests_total", "counter", "HTTP requests by route and status")
    metrics.describe("edge_request_seconds", "histogram", "request latency")
    metrics.describe("edge_time_to_first_token_seconds", "histogram", "time to the first streamed token")
    metrics.describe("edge_queue_depth", "gauge", "requests waiting for a slot, per model")
    pool = ModelPool(source, config, metrics, config.memory_budget_bytes or default_budget(config.profile))
    return create_app(pool, config)


def serve(source: BundleSource, config: DaemonConfig) -> None:
    run(build(source, config), config)


def run(app: FastAPI, config: DaemonConfig) -> None:
    """Serve a built app until SIGTERM/SIGINT: not ready at once, in-flight requests drain, the pool closes."""
    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=config.host,
            port=config.port,
            log_level="info",
            timeout_graceful_shutdown=int(config.drain_timeout_s) or None,
        )
    )
    original = server.handle_exit

    def on_signal(sig: int, frame: object) -> None:
        app.state.ready = False  # load balancers and `edge-sdk` health checks stop sending work
        original(sig, frame)  # type: ignore[arg-type]

    server.handle_exit = on_signal  # type: ignore[method-assign]
    try:
        server.run()
    finally:
        app.state.pool.close()
