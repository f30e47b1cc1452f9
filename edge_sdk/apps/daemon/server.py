"""Run the daemon with uvicorn: ready goes false on SIGTERM, in-flight requests drain, then exit."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from typing import TYPE_CHECKING

from edge_sdk.apps.daemon.config import DaemonConfig, read_api_keys, read_cloud_key
from edge_sdk.apps.daemon.pool import BundleSource, ModelPool
from edge_sdk.metrics import Metrics

if TYPE_CHECKING:
    import uvicorn
    from fastapi import FastAPI

# The web stack (fastapi, the routes' models, uvicorn) is imported by `build` and `run`: `serve` first starts
# loading the models in a thread, so the two overlap.


__all__ = ["build", "default_budget", "read_api_keys", "read_cloud_key", "run", "serve", "uvicorn_server"]


def default_budget(profile: str | None = None) -> int:
    """The memory budget of the profile served as (`--profile`), else of the detected host."""
    from device_profiles import load_profile

    return load_profile(profile or "host").budget_bytes


def build(source: BundleSource, config: DaemonConfig, pool: ModelPool | None = None) -> FastAPI:
    from edge_sdk.apps.daemon.app import create_app

    return create_app(pool or new_pool(source, config), config)


def new_pool(source: BundleSource, config: DaemonConfig) -> ModelPool:
    metrics = Metrics()
    metrics.describe("edge_requests_total", "counter", "HTTP requests by route and status")
    metrics.describe("edge_request_seconds", "histogram", "request latency")
    metrics.describe("edge_time_to_first_token_seconds", "histogram", "time to the first streamed token")
    metrics.describe("edge_queue_depth", "gauge", "requests waiting for a slot, per model")
    return ModelPool(source, config, metrics, config.memory_budget_bytes or default_budget(config.profile))


def serve(source: BundleSource, config: DaemonConfig) -> None:
    # Starting allocates the web stack's classes and the models' objects, hardly any garbage: the cyclic
    # collector would walk them again and again for nothing (about a tenth of the start's CPU). It is paused
    # until the models are preloaded, then what was built is frozen out of its later rounds.
    gc.disable()
    try:
        pool = new_pool(source, config)
        if config.preload:
            pool.start_early(source.names())  # reads the models while the web stack is imported
        app = build(source, config, pool)
        app.state.preload.when_done(_resume_collector)
        run(app, config)
    finally:
        gc.enable()


def _resume_collector() -> None:
    gc.freeze()  # the objects of the start live as long as the daemon: later full collections skip them
    gc.enable()


def run(app: FastAPI, config: DaemonConfig) -> None:
    """Serve a built app until SIGTERM/SIGINT: not ready at once, new requests get 503 + Retry-After while the
    in-flight ones drain (up to the drain timeout), then the listener closes and the pool with it."""
    from edge_sdk.apps.daemon.logs import configure_logging

    configure_logging(config.log_level, config.log_format)
    server = uvicorn_server(app, config)
    original = server.handle_exit

    def on_signal(sig: int, frame: object) -> None:
        if not app.state.ready:  # a second signal: stop waiting
            original(sig, frame)  # type: ignore[arg-type]
            return
        app.state.ready = False  # load balancers and `edge-sdk` health checks stop sending work

        def drain() -> None:
            deadline = time.monotonic() + config.drain_timeout_s
            while app.state.in_flight and time.monotonic() < deadline:
                time.sleep(0.05)
            original(sig, frame)  # type: ignore[arg-type]

        threading.Thread(target=drain, name="drain", daemon=True).start()

    server.handle_exit = on_signal  # type: ignore[method-assign]
    try:
        server.run()
    finally:
        app.state.pool.close()


def uvicorn_server(app: FastAPI, config: DaemonConfig) -> uvicorn.Server:
    import uvicorn

    return uvicorn.Server(
        uvicorn.Config(
            app,
            host=config.host,
            port=config.port,
            log_config=None,  # configure_logging's handler and format (`run`), for uvicorn's lines too
            log_level=config.log_level,
            http=header_timeout_protocol(config.header_timeout_s),
            limit_concurrency=config.max_connections,  # beyond: 503 at once, before the app sees the request
            timeout_graceful_shutdown=int(config.drain_timeout_s) or None,
        )
    )


def header_timeout_protocol(timeout_s: float) -> type:
    """uvicorn's h11 protocol, closing a connection whose request headers do not arrive within `timeout_s` of
    its opening or of the request's first byte (uvicorn bounds only the idle time between requests)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderTimeoutProtocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None

        def _waiting_for_headers(self) -> bool:
            return self.cycle is None or self.cycle.response_complete

        def _arm(self) -> None:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(timeout_s, self._headers_late)

        def _headers_late(self) -> None:
            self._header_timer = None
            if self._waiting_for_headers() and not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            if self._waiting_for_headers():
                self._arm()
            super().data_received(data)
            if not self._waiting_for_headers() and self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def connection_lost(self, exc: Exception | None) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
            super().connection_lost(exc)

    return HeaderTimeoutProtocol
