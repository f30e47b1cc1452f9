"""`edge-sdk cloud serve`: the cloud side of hybrid serving, assembled from pieces.

    DeviceAuth                  every request but health: a device or publisher key, or 401
    └── routes of the gateway   /v1/registry/bundles...  (publish, list, Range download)
        │                       /v1/telemetry            (durable, per device)
        └── PassThrough         an OpenAI request for a model not served here -> the upstream engine
            └── the device daemon, unchanged: the gateway's own bundles, /v1/models, /metrics, health

The gateway is thus the same daemon a device runs, with the upstream behind it: to a device it is just
another OpenAI-compatible server.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

from cloud_sync.devices import PUBLISHER, DeviceAuth, caller_of
from cloud_sync.passthrough import PassThrough
from cloud_sync.registry import Registry
from cloud_sync.registry_routes import add_registry_routes
from cloud_sync.telemetry import TelemetryStore, add_telemetry_routes
from edge_sdk.bundle.signing import TrustedKey
from edge_sdk.daemon.config import DaemonConfig
from edge_sdk.daemon.pool import BundleSource
from edge_sdk.daemon.server import build, run


class GatewayConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    devices: dict[str, str] = Field(min_length=1, description="device key -> device id")
    publishers: dict[str, str] = Field(default_factory=dict, description="publisher key -> publisher id")
    registry_dir: Path
    telemetry_db: Path | None = None  # None: <registry_dir>/telemetry.sqlite3
    trust: tuple[TrustedKey, ...] = ()  # non-empty: the registry accepts only bundles signed by these keys
    upstream_url: str | None = None
    upstream_api_key: str | None = None
    upstream_timeout_s: float = Field(default=300.0, gt=0)
    max_upload_bytes: int = Field(default=8 * 1024**3, gt=0)
    daemon: DaemonConfig = DaemonConfig()  # host, port and limits of the OpenAI side (its api_keys stay empty)


def build_gateway(source: BundleSource, config: GatewayConfig) -> FastAPI:
    daemon = build(source, config.daemon.model_copy(update={"api_keys": frozenset()}))
    pool = daemon.state.pool

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await passthrough.aclose()
        telemetry.close()

    app = FastAPI(title="edge-sdk cloud gateway", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state = daemon.state  # one state: the pool the server closes, `ready` that SIGTERM turns off
    app.exception_handlers.update(daemon.exception_handlers)  # the daemon's errors: OpenAI shape, 400 not 422

    registry = Registry(config.registry_dir, trust=config.trust or None)
    add_registry_routes(
        app,
        registry,
        may_publish=lambda request: (caller := caller_of(request.scope)) is not None and caller.role == PUBLISHER,
        max_upload_bytes=config.max_upload_bytes,
    )
    telemetry = TelemetryStore(config.telemetry_db or config.registry_dir / "telemetry.sqlite3")
    add_telemetry_routes(app, telemetry, pool.metrics)
    app.state.registry, app.state.telemetry = registry, telemetry

    passthrough = PassThrough(
        daemon,
        local_models=pool.source.names,
        upstream_url=config.upstream_url,
        upstream_key=config.upstream_api_key,
        timeout_s=config.upstream_timeout_s,
        max_body_bytes=config.daemon.max_body_bytes,
        metrics=pool.metrics,
    )
    app.mount("", passthrough)  # everything the routes above do not take
    app.add_middleware(DeviceAuth, devices=config.devices, publishers=config.publishers, metrics=pool.metrics)

    return app


def serve_gateway(source: BundleSource, config: GatewayConfig) -> None:
    run(build_gateway(source, config), config.daemon)
