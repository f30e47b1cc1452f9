"""Pass-through to an upstream OpenAI-compatible engine for the models the gateway does not serve itself.

An ASGI middleware in front of the gateway's own daemon: an OpenAI POST naming a model the daemon has goes
to the daemon; any other model goes to the upstream (vLLM, llama.cpp's server, a hosted endpoint) with the
upstream's key, and its answer — SSE included — streams back byte for byte. `X-Edge-Gateway: local|upstream`
says which answered.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edge_sdk.daemon.metrics import Metrics

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("edge_sdk.gateway")

OPENAI_PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
SERVED_BY = b"x-edge-gateway"
_PASSED_REQUEST_HEADERS = ("content-type", "accept", "idempotency-key")
_PASSED_RESPONSE_HEADERS = ("content-type", "retry-after", "cache-control", "x-request-id")


def _error(message: str, kind: str, status: int) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": None}}, status)


def _model_of(body: bytes) -> str | None:
    try:
        model = json.loads(body).get("model")
    except (ValueError, AttributeError):
        return None
    return model if isinstance(model, str) else None


class PassThrough:
    def __init__(
        self,
        app: ASGIApp,
        *,
        local_models: Callable[[], Collection[str]],
        upstream_url: str | None,
        upstream_key: str | None,
        timeout_s: float,
        max_body_bytes: int,
        metrics: Metrics,
    ) -> None:
        self.app, self.local_models, self.metrics = app, local_models, metrics
        self.upstream_url = upstream_url.rstrip("/") if upstream_url else None
        self.upstream_key, self.timeout_s, self.max_body_bytes = upstream_key, timeout_s, max_body_bytes
        self._client: httpx.AsyncClient | None = None
        metrics.describe("edge_gateway_upstream_total", "counter", "requests passed to the upstream, by status")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in OPENAI_PATHS:
            await self.app(scope, receive, send)
            return
        body, complete = await _read_body(receive, self.max_body_bytes)
        if not complete:
            await _error(
                f"request body is larger than the limit of {self.max_body_bytes} bytes", "invalid_request_error", 413
            )(scope, receive, send)
            return
        model = _model_of(body)
        if self.upstream_url is None or model is None or model in self.local_models():
            await self.app(scope, _replay(body, receive), _tagged(send, b"local"))
            return
        await self._forward(scope, body, model, receive, send)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def _forward(self, scope: Scope, body: bytes, model: str, receive: Receive, send: Send) -> None:
        import httpx

        if self._client is None:  # created on first use, inside the server's event loop
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(self.timeout_s, connect=5.0))
        incoming = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers") or []}
        headers = {k: incoming[k] for k in _PASSED_REQUEST_HEADERS if k in incoming}
        if self.upstream_key:
            headers["authorization"] = f"Bearer {self.upstream_key}"
        url = f"{self.upstream_url}{scope['path']}"
        try:
            response = await self._client.send(
                self._client.build_request("POST", url, content=body, headers=headers), stream=True
            )
        except httpx.TimeoutException:
            self.metrics.inc("edge_gateway_upstream_total", status="504")
            await _error(
                f"the upstream {self.upstream_url} did not answer within {self.timeout_s:g} s", "timeout", 504
            )(scope, _no_body, send)
            return
        except httpx.TransportError as exc:
            self.metrics.inc("edge_gateway_upstream_total", status="502")
            log.warning("upstream %s unreachable for model %s: %s", self.upstream_url, model, exc)
            await _error(
                f"model {model!r} is not served here and the upstream {self.upstream_url} is unreachable: {exc}",
                "upstream_error",
                502,
            )(scope, _no_body, send)
            return
        self.metrics.inc("edge_gateway_upstream_total", status=str(response.status_code))
        out_headers = [
            (k.encode(), response.headers[k].encode()) for k in _PASSED_RESPONSE_HEADERS if k in response.headers
        ]
        out_headers.append((SERVED_BY, b"upstream"))

        async def relay() -> None:
            await send({"type": "http.response.start", "status": response.status_code, "headers": out_headers})
            async for chunk in response.aiter_raw():  # SSE events reach the device as the upstream sends them
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        async def client_gone() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        # A device that leaves mid-stream closes the upstream request too, so the upstream stops generating.
        relaying, watching = asyncio.ensure_future(relay()), asyncio.ensure_future(client_gone())
        try:
            await asyncio.wait({relaying, watching}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (relaying, watching):
                task.cancel()
            await asyncio.gather(relaying, watching, return_exceptions=True)
            await response.aclose()
        if watching.done() and not watching.cancelled() and relaying.cancelled():
            self.metrics.inc("edge_gateway_upstream_abandoned_total")
            log.info("device left mid-stream; closed the upstream request for model %s", model)
        elif relaying.done() and not relaying.cancelled() and relaying.exception() is not None:
            raise relaying.exception()  # type: ignore[misc]


async def _read_body(receive: Receive, limit: int) -> tuple[bytes, bool]:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks), True
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return b"", False
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), True


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: wait for the client's disconnect, as the server would

    return replay


def _tagged(send: Send, value: bytes) -> Send:
    async def tagged(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), (SERVED_BY, value)]}
        await send(message)

    return tagged


async def _no_body() -> Message:
    return {"type": "http.disconnect"}
