"""The daemon's HTTP surface: health, metrics, models, the tensor API and the OpenAI-compatible API."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edge_sdk.apps.daemon.config import DaemonConfig
from edge_sdk.apps.daemon.gone import CLIENT_GONE, client_gone
from edge_sdk.apps.daemon.jobs_routes import add_jobs_routes
from edge_sdk.apps.daemon.openai_routes import add_openai_routes
from edge_sdk.apps.daemon.pool import ModelPool
from edge_sdk.apps.daemon.preload import add_preload
from edge_sdk.apps.daemon.status_routes import PAGE_PATHS, add_status_routes
from edge_sdk.apps.daemon.tensors import InferRequest, to_arrays, to_json
from edge_sdk.apps.daemon.text_routes import add_text_routes
from edge_sdk.errors import (
    BreakerOpenError,
    CloudError,
    ConfigError,
    EdgeSDKError,
    InputError,
    NonFiniteInputError,
    OverloadedError,
    RequestAbandonedError,
    RouteRefusedError,
    RuntimeFailure,
    UnknownModelError,
    UnsupportedOperationError,
)
from edge_sdk.metrics import Metrics

PUBLIC_PATHS = ("/health/live", "/health/ready")
INFER_PREFIX = "/v1/infer/"
RESERVATION = "edge_sdk.reservation"  # scope key: the queue place Drain took for a tensor request


def error_body(message: str, kind: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    """The OpenAI error shape, so OpenAI clients show our messages."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _status_for(exc: EdgeSDKError) -> tuple[int, str]:
    if isinstance(exc, RouteRefusedError):
        return exc.status_code, "route_refused"
    if isinstance(exc, CloudError):
        return (503 if isinstance(exc, BreakerOpenError) else 502), "cloud_unavailable"
    if isinstance(exc, UnknownModelError):
        return 404, "invalid_request_error"  # as OpenAI: the code says model_not_found
    if isinstance(exc, OverloadedError):
        return 429, "overloaded"
    if isinstance(exc, NonFiniteInputError):
        return 422, "invalid_request_error"
    if isinstance(exc, RequestAbandonedError):
        return 499, "client_closed_request"  # nobody reads it: the status is for the logs
    if isinstance(exc, InputError | UnsupportedOperationError | ConfigError):
        return 400, "invalid_request_error"
    if isinstance(exc, RuntimeFailure):
        return 500, "engine_error"
    return 500, "server_error"


class JsonBodies:
    """Every route here takes JSON: a body sent as a form (curl's `-d` says application/x-www-form-urlencoded) or
    with no Content-Type is read as the JSON it is, as OpenAI-compatible servers commonly do."""

    FORM = b"application/x-www-form-urlencoded"

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("POST", "PUT", "PATCH"):
            headers = [(k, v) for k, v in scope.get("headers") or [] if k != b"content-type"]
            given = next((v for k, v in scope.get("headers") or [] if k == b"content-type"), None)
            if given is None or given.split(b";")[0].strip().lower() == self.FORM:
                scope = {**scope, "headers": [*headers, (b"content-type", b"application/json")]}
        await self.app(scope, receive, send)


class BodyLimit:
    """413 before reading a body over the limit (by Content-Length, or while streaming a chunked body), and 408
    when the client stops sending its body for `timeout_s`: a slow client cannot hold a request open."""

    def __init__(self, app: ASGIApp, limit: int, timeout_s: float) -> None:
        self.app, self.limit, self.timeout_s = app, limit, timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await _refuse(send, 413, f"request body is larger than the limit of {self.limit} bytes", "too_large")
            return
        seen, refused, body_done = 0, 0, False
        gone = scope[CLIENT_GONE] = asyncio.Event()
        watcher: asyncio.Task[None] | None = None

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        async def limited() -> Message:
            # Past a limit the app is told the client left, so it stops reading; we answer instead.
            nonlocal seen, refused, body_done, watcher
            if body_done:  # afterwards receive() only waits for a disconnect, which the watcher sees first
                await gone.wait()
                return {"type": "http.disconnect"}
            try:
                message = await asyncio.wait_for(receive(), self.timeout_s)
            except TimeoutError:
                refused = 408
                return {"type": "http.disconnect"}
            seen += len(message.get("body", b""))
            body_done = message["type"] != "http.request" or not message.get("more_body", False)
            if message["type"] == "http.disconnect":
                gone.set()
            elif body_done:  # from now on a disconnect is noticed at once: `client_gone` can ask without waiting
                watcher = asyncio.create_task(watch())
            if seen > self.limit:
                refused = 413
                return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not refused:
                await send(message)

        try:
            await self.app(scope, limited, guarded_send)
        except Exception:
            if not refused:
                raise
        finally:
            if watcher is not None:
                watcher.cancel()
        if refused == 413:
            await _refuse(send, 413, f"request body is larger than the limit of {self.limit} bytes", "too_large")
        elif refused == 408:
            await _refuse(send, 408, f"no request body data for {self.timeout_s:g} s: request abandoned", "timeout")


class Drain:
    """Counts requests in flight; once `state.ready` is false (SIGTERM), new work gets 503 with Retry-After
    while the listener stays open, so clients are told to retry rather than refused a connection. A tensor
    request for a model whose queue is full gets its 429 here, before its body is read or parsed."""

    def __init__(self, app: ASGIApp, state: Any, retry_after_s: float, api_keys: frozenset[str]) -> None:
        self.app, self.state, self.retry_after_s, self.api_keys = app, state, retry_after_s, api_keys
        state.in_flight = 0

    def _authorized(self, scope: Scope) -> bool:
        if not self.api_keys:
            return True
        header = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
        return header.lower().startswith("bearer ") and header[7:] in self.api_keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in (*PUBLIC_PATHS, "/metrics"):
            await self.app(scope, receive, send)
            return
        if not self.state.ready:
            body = error_body("the daemon is shutting down: retry on another instance or later", "unavailable")
            headers = {"Retry-After": str(max(1, math.ceil(self.retry_after_s))), "Connection": "close"}
            await JSONResponse(body, status_code=503, headers=headers)(scope, receive, send)
            return
        path = scope["path"]
        infer = scope["method"] == "POST" and path.startswith(INFER_PREFIX) and "/" not in path[len(INFER_PREFIX) :]
        reservation = None
        if infer and self._authorized(scope):  # a stranger learns nothing, and gets its 401 from auth
            try:
                reservation = scope[RESERVATION] = self.state.pool.reserve(path[len(INFER_PREFIX) :])
            except OverloadedError as exc:
                headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))}
                body = error_body(str(exc), "overloaded")
                await JSONResponse(body, status_code=429, headers=headers)(scope, receive, send)
                return
        self.state.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.state.in_flight -= 1
            if reservation is not None:  # not taken over by the pool: the request failed before it ran
                self.state.pool.release(reservation)


async def _refuse(send: Send, status: int, message: str, code: str) -> None:
    response = JSONResponse(error_body(message, "invalid_request_error", code), status_code=status)
    await response({"type": "http"}, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


def create_app(pool: ModelPool, config: DaemonConfig) -> FastAPI:
    metrics = pool.metrics
    app = FastAPI(title="edge-sdk daemon", docs_url=None, redoc_url=None)
    app.state.ready = True
    app.state.pool = pool
    app.add_middleware(JsonBodies)
    preload = add_preload(app, pool, config.preload)
    app.add_middleware(BodyLimit, limit=config.max_body_bytes, timeout_s=config.body_timeout_s)
    # outermost: a draining daemon or a full queue answers before anything else runs
    app.add_middleware(Drain, state=app.state, retry_after_s=config.drain_timeout_s or 1.0, api_keys=config.api_keys)

    @app.middleware("http")
    async def auth_and_measure(request: Request, call_next: Any) -> Response:
        path = request.url.path
        if config.api_keys and path not in PUBLIC_PATHS and path not in PAGE_PATHS:  # pages ask for the key
            header = request.headers.get("authorization", "")
            token = header[7:] if header.lower().startswith("bearer ") else ""
            if token not in config.api_keys:
                refused = JSONResponse(
                    error_body("missing or wrong API key (Authorization: Bearer <key>)", "authentication_error"),
                    status_code=401,
                )
                app.state.hybrid.finish(request, refused)
                return refused
        start = time.monotonic()
        response: Response = await call_next(request)
        app.state.hybrid.finish(request, response)
        if path.startswith("/v1/"):
            route = path.split("/")[2] if path.count("/") >= 2 else path
            metrics.inc("edge_requests_total", route=route, status=str(response.status_code))
            metrics.observe("edge_request_seconds", time.monotonic() - start, route=route)
        return response

    @app.exception_handler(EdgeSDKError)
    async def sdk_error(_request: Request, exc: EdgeSDKError) -> JSONResponse:
        status, kind = _status_for(exc)
        retry_after = getattr(exc, "retry_after_s", None)
        headers = {"Retry-After": f"{max(1, math.ceil(retry_after))}"} if retry_after is not None else None
        code = exc.reason if isinstance(exc, RouteRefusedError) else None
        param = None
        if isinstance(exc, UnknownModelError):
            code, param = "model_not_found", "model"
        return JSONResponse(error_body(str(exc), kind, code, param), status_code=status, headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        """Unknown paths and methods too answer in the OpenAI shape."""
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return JSONResponse(
            error_body(str(exc.detail), "invalid_request_error", code), status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )  # fmt: skip

    @app.exception_handler(TimeoutError)
    async def timed_out(_request: Request, _exc: TimeoutError) -> JSONResponse:
        return JSONResponse(
            error_body(f"the request took longer than {config.request_timeout_s:g} s", "timeout"), status_code=504
        )

    @app.exception_handler(RequestValidationError)
    async def bad_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = explain_validation(exc.errors())
        return JSONResponse(error_body(message, "invalid_request_error", None, param), status_code=400)

    @app.get("/health/live")
    async def live() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/health/ready")
    async def ready() -> JSONResponse:
        # Not ready while a model loads: at start (preloading) or later (a swap to a new version).
        ok = bool(app.state.ready) and pool.loading == 0 and not preload.pending
        state = "ready" if ok else ("draining" if not app.state.ready else "loading")
        body = {"ready": ok, "state": state, "models": pool.source.names(), **preload.describe()}
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics")
    async def prometheus() -> PlainTextResponse:
        _memory_gauges(metrics, pool)
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [await _model_entry(pool, name) for name in pool.source.names()]}

    @app.get("/v1/models/{model:path}")
    async def model(model: str) -> dict[str, Any]:
        pool.check_known(model)
        return await _model_entry(pool, model)

    @app.post("/v1/infer/{model}")
    async def infer(model: str, body: InferRequest, request: Request) -> dict[str, Any]:
        async def run() -> dict[str, Any]:
            async with pool.use(model, client_gone(request), request.scope.get(RESERVATION)) as loaded:
                arrays = to_arrays(body, loaded.session.inputs, allow_nonfinite=config.allow_nonfinite)
                outputs = await asyncio.to_thread(loaded.call, lambda: loaded.session.run(arrays))
            return {"model": model, "variant": loaded.variant.id, "outputs": to_json(outputs)}

        return await asyncio.wait_for(run(), timeout=config.request_timeout_s)  # queue wait included

    add_openai_routes(app, pool, config)
    add_text_routes(app, pool, config)
    add_jobs_routes(app, pool, config)
    add_status_routes(app, pool, config)
    return app


async def _model_entry(pool: ModelPool, name: str) -> dict[str, Any]:
    """OpenAI's model object, plus what the device does with it: loaded or not, which variant and why."""
    entry: dict[str, Any] = {"id": name, "object": "model", "created": 0, "owned_by": "edge-sdk"}
    entry["loaded"] = pool.resident(name) is not None
    try:
        choice = await asyncio.to_thread(pool.choice, name)
        entry.update(variant=choice.variant.id, backend=choice.variant.backend.value, variant_reason=choice.reason)
    except EdgeSDKError as exc:  # a bundle that does not open, or no variant fits: listed, with the reason
        entry.update(variant=None, backend=None, variant_reason=str(exc))
    return entry


def explain_validation(errors: Sequence[Any]) -> tuple[str, str | None]:
    """A 400's message naming each bad field and what is valid, and the first field as OpenAI's `param`."""
    problems, params = [], []
    for e in errors[:5]:
        loc = [str(p) for p in e["loc"] if p != "body"]
        field = ".".join(loc)
        if e["type"] == "json_invalid":
            problems.append(f"the body is not valid JSON ({e.get('ctx', {}).get('error', e['msg'])})")
            continue
        if e["type"] == "extra_forbidden":
            problems.append(f"unknown field {field!r} ({field}: Extra inputs are not permitted)")
        else:
            msg = str(e["msg"]).removeprefix("Value error, ")
            problems.append(f"{field or 'body'}: {msg}")
        if field:
            params.append(field)
    return "invalid request: " + "; ".join(problems), (params[0] if params else None)


def _memory_gauges(metrics: Metrics, pool: ModelPool) -> None:
    from device_profiles.host import process_resident_bytes

    rss = process_resident_bytes()
    if rss is not None:
        metrics.set("edge_process_resident_bytes", rss)
    metrics.set("edge_models_loaded", len(pool.loaded()))
    metrics.set("edge_models_loaded_bytes", sum(m.bytes for m in pool.loaded()))
