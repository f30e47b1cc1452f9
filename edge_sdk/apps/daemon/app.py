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
from edge_sdk.apps.daemon.jobs_routes import add_jobs_routes
from edge_sdk.apps.daemon.openai_routes import add_openai_routes
from edge_sdk.apps.daemon.pool import ModelPool
from edge_sdk.apps.daemon.tensors import InferRequest, to_arrays, to_json
from edge_sdk.errors import (
    BreakerOpenError,
    CloudError,
    ConfigError,
    EdgeSDKError,
    InputError,
    OverloadedError,
    RouteRefusedError,
    RuntimeFailure,
    UnknownModelError,
    UnsupportedOperationError,
)
from edge_sdk.metrics import Metrics

PUBLIC_PATHS = ("/health/live", "/health/ready")


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
    if isinstance(exc, InputError | UnsupportedOperationError | ConfigError):
        return 400, "invalid_request_error"
    if isinstance(exc, RuntimeFailure):
        return 500, "engine_error"
    return 500, "server_error"


class BodyLimit:
    """413 before reading a body over the limit: by Content-Length, or while streaming a chunked body."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await _too_large(send, self.limit)
            return
        seen, too_big = 0, False

        async def limited() -> Message:
            # Past the limit the app is told the client left, so it stops reading; we answer 413 instead.
            nonlocal seen, too_big
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                too_big = True
                return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not too_big:
                await send(message)

        try:
            await self.app(scope, limited, guarded_send)
        except Exception:
            if not too_big:
                raise
        if too_big:
            await _too_large(send, self.limit)


async def _too_large(send: Send, limit: int) -> None:
    response = JSONResponse(
        error_body(f"request body is larger than the limit of {limit} bytes", "invalid_request_error", "too_large"),
        status_code=413,
    )
    await response({"type": "http"}, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


def create_app(pool: ModelPool, config: DaemonConfig) -> FastAPI:
    metrics = pool.metrics
    app = FastAPI(title="edge-sdk daemon", docs_url=None, redoc_url=None)
    app.state.ready = True
    app.state.pool = pool
    app.add_middleware(BodyLimit, limit=config.max_body_bytes)

    @app.middleware("http")
    async def auth_and_measure(request: Request, call_next: Any) -> Response:
        path = request.url.path
        if config.api_keys and path not in PUBLIC_PATHS:
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
        ok = bool(app.state.ready) and pool.loading == 0
        state = "ready" if ok else ("draining" if not app.state.ready else "loading")
        return JSONResponse(
            {"ready": ok, "state": state, "models": pool.source.names()}, status_code=200 if ok else 503
        )

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
    async def infer(model: str, body: InferRequest) -> dict[str, Any]:
        async with pool.use(model) as loaded:
            arrays = to_arrays(body, loaded.session.inputs)
            outputs = await asyncio.wait_for(
                asyncio.to_thread(loaded.call, lambda: loaded.session.run(arrays)), timeout=config.request_timeout_s
            )
        return {"model": model, "variant": loaded.variant.id, "outputs": to_json(outputs)}

    add_openai_routes(app, pool, config)
    add_jobs_routes(app, pool, config)
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
    try:
        with open("/proc/self/status") as fh:
            rss = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmRSS:"))
        metrics.set("edge_process_resident_bytes", rss)
    except (OSError, StopIteration):
        pass
    metrics.set("edge_models_loaded", len(pool.loaded()))
    metrics.set("edge_models_loaded_bytes", sum(m.bytes for m in pool.loaded()))
