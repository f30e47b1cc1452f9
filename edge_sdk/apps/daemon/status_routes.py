"""`GET /`: the daemon's status page (edge_sdk.apps.pages.status), behind the API key (pages.keys).

The page is gathered from what the daemon already keeps (the pool, its metrics, the router's breaker, the
offline queue) plus the last error answers, recorded here by an outermost middleware.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edge_sdk.apps.daemon.config import DaemonConfig
from edge_sdk.apps.daemon.pool import ModelPool
from edge_sdk.apps.pages.keys import PageKeys, redact_keys_in_access_log
from edge_sdk.errors import EdgeSDKError
from edge_sdk.version import __version__

if TYPE_CHECKING:  # the page is built when someone looks: its HTML and SVG code is not on the start's path
    from edge_sdk.apps.pages.status import DaemonStatus, ModelStatus, RecentError

PAGE_PATHS = ("/",)  # they check the API key themselves: a browser sends it as a cookie or a form
RECENT_ERRORS = 20
# Not errors to an operator: the sign-in form's 401, a readiness probe's 503 while loading (probes come often).
QUIET_PATHS = (*PAGE_PATHS, "/health/live", "/health/ready")
_BODY_PEEK = 2048


class RecordErrors:
    """ASGI middleware keeping the last error answers (status ≥ 400) with their message, for the page."""

    def __init__(self, app: ASGIApp, recent: deque[RecentError]) -> None:
        self.app, self.recent = app, recent

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in QUIET_PATHS:
            await self.app(scope, receive, send)
            return
        status, body, noted = 0, b"", False

        def note() -> None:
            nonlocal noted
            if status >= 400 and not noted:
                from edge_sdk.apps.pages.status import RecentError

                noted = True
                self.recent.append(
                    RecentError(time.time(), status, f"{scope['method']} {scope['path']}", _message(body))
                )

        async def watch(message: Message) -> None:
            nonlocal status, body
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and status >= 400:
                body += message.get("body", b"")[: _BODY_PEEK - len(body)]
                if not message.get("more_body", False):
                    note()  # as it is sent: an app may return later than its answer leaves (keep-alive)
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            note()  # an error answer cut short is still one


def _message(body: bytes) -> str:
    """The error message of an OpenAI-shaped error body, else the body's start."""
    try:
        error = json.loads(body).get("error")
        if isinstance(error, dict):
            return str(error.get("message", ""))[:300]
        return str(error or json.loads(body).get("detail", ""))[:300]
    except (ValueError, AttributeError):
        return body[:300].decode("utf-8", "replace")


def add_status_routes(app: FastAPI, pool: ModelPool, config: DaemonConfig) -> None:
    recent: deque[RecentError] = deque(maxlen=RECENT_ERRORS)
    app.add_middleware(RecordErrors, recent=recent)
    keys = PageKeys("status", config.api_keys)
    redact_keys_in_access_log()
    started = time.monotonic()
    title = f"edge-sdk on {socket.gethostname()}"

    @app.api_route("/", methods=["GET", "POST"], include_in_schema=False, response_model=None)
    async def status(request: Request) -> Response:
        answer = await keys.login(request, title)
        if answer is not None:
            return answer
        from edge_sdk.apps.pages.status import status_page

        snapshot = await gather(app, pool, config, time.monotonic() - started, list(recent))
        return HTMLResponse(status_page(snapshot), headers={"Cache-Control": "no-store"})


async def gather(
    app: FastAPI, pool: ModelPool, config: DaemonConfig, uptime_s: float, errors: list[RecentError]
) -> DaemonStatus:
    from device_profiles.host import available_memory_bytes, process_resident_bytes
    from edge_sdk.apps.pages.status import DaemonStatus

    metrics = pool.metrics
    routes = [(k.get("route", "?"), k.get("reason", "?"), int(v)) for k, v in metrics.series("edge_route_total")]
    answered: dict[str, int] = {}
    for labels, value in metrics.series("edge_requests_total"):
        klass = labels.get("status", "?")[:1] + "xx"
        answered[klass] = answered.get(klass, 0) + int(value)
    hybrid = getattr(app.state, "hybrid", None)
    breaker = hybrid.breaker.state.value if hybrid is not None and hybrid.breaker is not None else None
    jobs = getattr(app.state, "jobs", None)
    offline = await asyncio.to_thread(jobs.queue.counts) if jobs is not None else None
    ready = bool(app.state.ready) and pool.loading == 0
    return DaemonStatus(
        host=socket.gethostname(),
        sdk_version=__version__,
        state="ready" if ready else ("draining" if not app.state.ready else "loading"),
        uptime_s=uptime_s,
        profile=config.profile or "host (detected)",
        models=[await _model(pool, name) for name in pool.source.names()],
        budget_bytes=pool.budget_bytes,
        process_bytes=process_resident_bytes(),
        available_bytes=available_memory_bytes(),
        concurrency_per_model=config.concurrency_per_model,
        queue_per_model=config.queue_per_model,
        routes=routes,
        requests=answered,
        cloud_url=config.cloud_url,
        breaker=breaker,
        offline_queue=offline,
        errors=errors,
        now=time.time(),
    )


async def _model(pool: ModelPool, name: str) -> ModelStatus:
    from edge_sdk.apps.pages.status import ModelStatus

    running, waiting = pool.queue_state(name)
    version = pool.source.current_version(name)
    loaded = pool.resident(name)
    if loaded is not None:
        return ModelStatus(
            name,
            version,
            loaded.variant.id,
            loaded.variant.backend.value,
            loaded.reason,
            True,
            loaded.bytes,
            running,
            waiting,
        )
    try:  # opens (verifies) the bundle once per version; the pool keeps the answer
        choice = await asyncio.to_thread(pool.choice, name)
        size, _context = await asyncio.to_thread(pool.plan, name)
    except EdgeSDKError as exc:  # a bundle that does not open, or no variant fits: shown with the reason
        return ModelStatus(name, version, None, None, str(exc), False, None, running, waiting)
    variant: Any = choice.variant
    return ModelStatus(name, version, variant.id, variant.backend.value, choice.reason, False, size, running, waiting)
