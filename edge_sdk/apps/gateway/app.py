"""`edge-sdk cloud serve`: the cloud side of hybrid serving, assembled from pieces.

    DeviceAuth                    every request but health: a device or publisher key, or 401
    └── IdempotentExceptUploads   a POST with Idempotency-Key runs once per device; a repeat gets the stored
        │                         response (cloud_sync.idempotency); registry uploads pass (streamed to disk)
        ├── the gateway's routes  /v1/registry/bundles... (publish, list, Range download), /v1/telemetry,
        │                         /v1/rollouts and /v1/devices (staged rollouts, device groups)
        └── the device daemon     the gateway's own bundles, /v1/models, /metrics, health; its cloud is the
                                  upstream engine, so a model not served here is forwarded there (SSE too,
                                  with the cloud client's retries and breaker; X-Edge-Route says which)

The gateway is thus the same daemon a device runs, with the upstream as its cloud: to a device it is just
another OpenAI-compatible server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from cloud_sync.database import Database, DatabaseUnavailable, open_database
from cloud_sync.idempotency import IdempotencyMiddleware, IdempotencyStore
from cloud_sync.registry import Registry
from cloud_sync.rollouts import Rollouts
from cloud_sync.telemetry import TelemetryStore
from edge_sdk.apps.daemon.config import daemon_config
from edge_sdk.apps.daemon.pool import BundleSource
from edge_sdk.apps.daemon.server import build
from edge_sdk.apps.gateway.config import GatewayConfig
from edge_sdk.apps.gateway.devices import PUBLISHER, DeviceAuth, caller_of
from edge_sdk.apps.gateway.fleet_routes import PAGE_PATHS, add_fleet_routes
from edge_sdk.apps.gateway.registry_routes import PREFIX, add_registry_routes
from edge_sdk.apps.gateway.rollout_routes import add_rollout_routes, evaluate
from edge_sdk.apps.gateway.telemetry_routes import add_telemetry_routes
from edge_sdk.metrics import Metrics


def build_gateway(source: BundleSource, config: GatewayConfig) -> FastAPI:
    settings = config.daemon.model_dump() | {
        "api_keys": frozenset(),  # devices are authenticated by DeviceAuth, in front
        "cloud_url": config.upstream_url,
        "cloud_api_key": config.upstream_api_key,
        "cloud_timeout_s": config.upstream_timeout_s,
    }
    daemon = build(source, daemon_config(**settings))
    pool = daemon.state.pool

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        ticker = asyncio.create_task(_tick(rollouts, pool.metrics, config.rollout_interval_s))
        # A mounted app's lifespan does not run by itself: run the daemon's here, so it preloads the gateway's
        # own bundles (until then /health/ready says "loading", which a balancer must not wait on forever)
        # and runs its shutdown hooks (the upstream client's close).
        async with daemon.router.lifespan_context(daemon):
            yield
        ticker.cancel()
        telemetry.close()
        idempotency.close()
        rollouts.close()
        registry.close()
        if shared is not None:
            shared.close()

    app = FastAPI(title="edge-sdk cloud gateway", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state = daemon.state  # one state: the pool the server closes, `ready` that SIGTERM turns off
    app.exception_handlers.update(daemon.exception_handlers)  # the daemon's errors: OpenAI shape, 400 not 422
    app.add_exception_handler(DatabaseUnavailable, _database_unavailable)

    shared = open_database(config.database_url) if config.database_url else None

    def database(own_file: Path | None, default_name: str) -> Database | Path:
        return shared if shared is not None else own_file or config.registry_dir / default_name

    registry = Registry(config.registry_dir, trust=config.trust or None, database=shared)
    telemetry = TelemetryStore(database(config.telemetry_db, "telemetry.sqlite3"))
    rollouts = Rollouts(
        database(config.rollouts_db, "rollouts.sqlite3"),
        groups={device: config.groups.get(device, ()) for device in config.devices.values()},
        clock=config.clock,
    )
    add_telemetry_routes(app, telemetry, pool.metrics, rollouts)
    add_rollout_routes(app, rollouts, registry, pool.metrics)
    add_registry_routes(
        app,
        registry,
        may_publish=lambda request: (caller := caller_of(request.scope)) is not None and caller.role == PUBLISHER,
        max_upload_bytes=config.max_upload_bytes,
        rollouts=rollouts,
    )
    app.state.registry, app.state.telemetry, app.state.rollouts = registry, telemetry, rollouts
    add_fleet_routes(app, telemetry, registry, devices=config.devices, publishers=config.publishers, rollouts=rollouts)

    app.mount("", daemon)  # everything the routes above do not take
    idempotency = IdempotencyStore(
        database(config.idempotency_db, "idempotency.sqlite3"), lease_s=config.idempotency_lease_s
    )
    app.add_middleware(IdempotentExceptUploads, store=idempotency)
    # added last, so outermost: idempotency keys on the device it authenticated, and a refusal never gets in
    app.add_middleware(
        DeviceAuth, devices=config.devices, publishers=config.publishers, metrics=pool.metrics, seen=rollouts,
        public_paths=("/health/live", "/health/ready", *PAGE_PATHS),  # the fleet page asks for its key itself
    )  # fmt: skip

    return app


async def _database_unavailable(_request: Request, exc: Exception) -> JSONResponse:
    """PostgreSQL is down or unreachable: "try again" (devices' clients and queues retry), nothing half-done."""
    body = {"error": {"message": str(exc), "type": "server_error", "param": None, "code": "database_unavailable"}}
    return JSONResponse(body, status_code=503, headers={"Retry-After": "5"})


async def _tick(rollouts: Rollouts, metrics: Metrics, interval_s: float) -> None:
    """Take rollouts' due decisions (a stage wait running out) even when no device calls."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await evaluate(rollouts, metrics)
        except Exception as exc:  # a locked or full database: the next tick tries again
            logging.getLogger("edge_sdk.rollout").warning("rollout evaluation failed: %s", exc)


class IdempotentExceptUploads:
    """The idempotency middleware for every POST but registry uploads, which it would hold in memory."""

    def __init__(self, app: ASGIApp, *, store: IdempotencyStore) -> None:
        self.app, self.idempotent = app, IdempotencyMiddleware(app, store)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(PREFIX):
            await self.app(scope, receive, send)  # a re-upload is harmless: same bytes, same entry
        else:
            await self.idempotent(scope, receive, send)
