"""The daemon's side of hybrid serving: measure the device, ask the router, serve here or forward to the cloud.

Every OpenAI request leaves with `X-Edge-Route` (local, cloud or reject) and `X-Edge-Route-Reason` (a
cloud_sync.router.Reason), counted in `edge_route_total{route,reason}` and logged. Without a cloud URL the
daemon answers as it always did (route local, reason default).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import Request
from fastapi.responses import Response, StreamingResponse

from cloud_sync.breaker import BreakerState, CircuitBreaker
from cloud_sync.router import CallerChoice, Decision, LocalFacts, PrivacyPolicy, Reason, Route, Router
from edge_sdk.apps.daemon.config import DaemonConfig
from edge_sdk.apps.daemon.pool import LoadedModel, ModelPool
from edge_sdk.errors import (
    BreakerOpenError,
    CloudResponseError,
    CloudUnavailableError,
    ConfigError,
    ContextLengthError,
    EdgeSDKError,
    InputError,
    OverloadedError,
    RouteRefusedError,
    UnsupportedOperationError,
)

if TYPE_CHECKING:  # imported when a cloud is configured: a daemon without one loads no HTTP client code
    from cloud_sync.client import CloudClient

ROUTE_HEADER = "X-Edge-Route"
REASON_HEADER = "X-Edge-Route-Reason"
ROUTED_PATHS = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/embeddings"})
BREAKER_LEVEL = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}
# Caller headers the cloud should see too (the caller's own Authorization is for the device, never passed on).
PASSED_ON_HEADERS = frozenset({"idempotency-key", "x-request-id"})
# Local failures that are the request's own fault: the cloud would refuse it too.
CALLER_FAULTS = (InputError, UnsupportedOperationError, ConfigError)

log = logging.getLogger("edge_sdk.route")


@dataclass(frozen=True)
class Ask:
    """One OpenAI request as the router sees it."""

    model: str
    endpoint: str  # /v1/chat/completions, /v1/completions or /v1/embeddings
    stream: bool = False
    prompt: str | None = None
    messages: Sequence[Mapping[str, str]] = ()
    texts: Sequence[str] = ()  # embeddings
    max_tokens: int = 0


@dataclass
class _Tag:
    route: Route
    reason: Reason
    detail: str
    model: str


def estimate_tokens(text: str) -> int:
    """A conservative token count without a tokenizer: byte-level BPE rarely packs fewer than 3 bytes a token."""
    return len(text.encode("utf-8")) // 3 + 1


def _estimate(ask: Ask) -> int:
    if ask.texts:
        return max(estimate_tokens(t) for t in ask.texts)
    if ask.prompt is not None:
        return estimate_tokens(ask.prompt)
    return sum(estimate_tokens(m.get("content", "")) + 8 for m in ask.messages)  # + the template's markup


class Hybrid:
    def __init__(self, pool: ModelPool, config: DaemonConfig) -> None:
        self.pool, self.metrics = pool, pool.metrics
        self.metrics.describe("edge_route_total", "counter", "requests by route (local, cloud, reject) and reason")
        self.metrics.describe(
            "edge_cloud_breaker_state", "gauge", "cloud circuit breaker: 0 closed, 1 half-open, 2 open"
        )
        self.breaker: CircuitBreaker | None = None
        self.client: CloudClient | None = None
        if config.cloud_url:
            from cloud_sync.client import CloudClient, RetryPolicy

            self.breaker = CircuitBreaker(
                failure_threshold=config.breaker_failures, reset_after_s=config.breaker_reset_s, on_change=self._moved
            )
            self.metrics.set("edge_cloud_breaker_state", 0)
            self.client = CloudClient(
                config.cloud_url,
                api_key=config.cloud_api_key,
                timeout=config.cloud_timeout_s,
                retry=RetryPolicy(attempts=config.cloud_retries + 1),
                breaker=self.breaker,
            )
        self.router = Router(
            cloud_configured=self.client is not None,
            slo_s=config.slo_ms / 1e3 if config.slo_ms else None,
            privacy=PrivacyPolicy(config.local_only_models),
            breaker=self.breaker,
        )

    async def serve(self, request: Request, ask: Ask, local: Callable[[], Awaitable[Any]]) -> Any:
        try:
            caller = CallerChoice.parse(request.headers.get(ROUTE_HEADER))
        except InputError as exc:  # refused for the caller's header: the answer still says so
            self._tag(request, ask, Decision(Route.REJECT, Reason.CALLER, str(exc), 400))
            raise
        facts = await self.facts(ask) if self.client is not None else LocalFacts(installed=True)
        decision = self.router.decide(ask.model, facts, caller)
        self._tag(request, ask, decision)
        if decision.route is Route.REJECT:
            raise RouteRefusedError(
                decision.detail,
                reason=decision.reason,
                status_code=decision.status,
                retry_after_s=decision.retry_after_s,
            )
        if decision.route is Route.CLOUD:
            try:
                return await self._forward(request, ask)
            except CloudUnavailableError as exc:
                if caller is not CallerChoice.AUTO or not facts.possible:
                    raise
                # The cloud failed before answering and the device can do it (only slower): serve it here.
                why = Reason.BREAKER_OPEN if isinstance(exc, BreakerOpenError) else Reason.CLOUD_FAILED
                self._tag(request, ask, Decision(Route.LOCAL, why, f"{decision.detail}; then {exc}"))
                return await local()
        try:
            return await _first_byte(await local())
        except CALLER_FAULTS as exc:
            if not isinstance(exc, ContextLengthError):
                raise
            retry = self.router.after_local_failure(ask.model, Reason.CONTEXT, str(exc), caller)
            if retry is None:
                raise
        except OverloadedError as exc:
            retry = self.router.after_local_failure(ask.model, Reason.OVERLOADED, str(exc), caller)
            if retry is None:
                raise
        except Exception as exc:  # the engine failed before the first byte
            retry = self.router.after_local_failure(
                ask.model, Reason.LOCAL_FAILED, f"{type(exc).__name__}: {exc}", caller
            )
            if retry is None:
                raise
        self._tag(request, ask, retry)
        return await self._forward(request, ask)

    async def facts(self, ask: Ask) -> LocalFacts:
        if ask.model not in self.pool.source.names():
            return LocalFacts(installed=False)
        loaded = self.pool.resident(ask.model)
        tokens = 0
        if loaded is not None:
            context = loaded.session.context_length
            fits = ask.endpoint != "/v1/embeddings" or self.pool.instance_fits(loaded, "embed")
            if context is not None:
                tokens = await self._count_tokens(ask, loaded)
        else:
            try:
                size, context = await asyncio.to_thread(self.pool.plan, ask.model)
            except EdgeSDKError:  # a bundle that does not open: the local path fails, and says why
                return LocalFacts(installed=True)
            fits = self.pool.fits_now(ask.model, size)
            tokens = _estimate(ask) if context is not None else 0
        return LocalFacts(
            installed=True,
            fits_memory=fits,
            context_limit=context,
            prompt_tokens=tokens,
            max_tokens=ask.max_tokens,
            estimated_wait_s=self.pool.estimated_wait_s(ask.model),
        )

    @staticmethod
    async def _count_tokens(ask: Ask, loaded: LoadedModel) -> int:
        """With the loaded model's tokenizer (its vocabulary only, beside a running generation). Long texts are
        counted in a thread, holding the model so that it is not unloaded meanwhile."""
        session: Any = loaded.session

        def count() -> int:
            if ask.texts:
                return max(session.count_prompt_tokens(prompt=t) for t in ask.texts)
            return int(session.count_prompt_tokens(prompt=ask.prompt, messages=ask.messages))

        try:
            if sum(map(len, [ask.prompt or "", *ask.texts, *(m.get("content", "") for m in ask.messages)])) < 4096:
                return count()
            loaded.in_use += 1
            try:
                return await asyncio.to_thread(count)
            finally:
                loaded.in_use -= 1
        except CALLER_FAULTS:
            return _estimate(ask)  # a template or tokenizer that refuses it: the local path will say why

    async def _forward(self, request: Request, ask: Ask) -> Response:
        assert self.client is not None
        body = json.loads(await request.body())  # as the caller sent it: fields we do not use pass on too
        passed_on = {k.lower(): v for k, v in request.headers.items() if k.lower() in PASSED_ON_HEADERS}
        device = (request.scope.get("state") or {}).get("device_id")
        if device and "idempotency-key" in passed_on:  # a gateway: one upstream key per device's key
            from cloud_sync.idempotency import upstream_key

            passed_on["idempotency-key"] = upstream_key(str(device), passed_on["idempotency-key"])
        try:
            if not ask.stream:
                reply = await self.client.post_json(ask.endpoint, body, headers=passed_on)
                return _relay_response(reply.status_code, reply.content, reply.headers.get("content-type"))
            pieces = self.client.stream(ask.endpoint, body, headers=passed_on)
            first = await anext(pieces, b"")  # before this, failures are still HTTP statuses
        except CloudResponseError as exc:
            return _relay_response(exc.status_code, exc.body, "application/json")
        return StreamingResponse(_relay_stream(first, pieces), media_type="text/event-stream")

    def finish(self, request: Request, response: Response) -> None:
        """Called by the app's middleware on every response: headers, metric and log of the final route."""
        tag: _Tag | None = getattr(request.state, "edge_route", None)
        if tag is None:
            if request.url.path not in ROUTED_PATHS or response.status_code < 400:
                return
            # refused before the router saw it (a malformed body, a wrong key): it still says so
            tag = _Tag(Route.REJECT, Reason.INVALID, f"refused before routing ({response.status_code})", "-")
        response.headers[ROUTE_HEADER] = tag.route.value
        response.headers[REASON_HEADER] = tag.reason.value
        self.metrics.inc("edge_route_total", route=tag.route.value, reason=tag.reason.value)
        fields: dict[str, object] = {"event": "route", "route": tag.route.value, "reason": tag.reason.value}
        fields |= {"model": tag.model, "status": response.status_code, "path": request.url.path, "detail": tag.detail}
        log.info(
            "route=%s reason=%s model=%s status=%d: %s",
            tag.route.value, tag.reason.value, tag.model, response.status_code, tag.detail, extra=fields,
        )  # fmt: skip

    async def aclose(self) -> None:
        if self.client is not None:
            await self.client.aclose()

    def _tag(self, request: Request, ask: Ask, decision: Decision) -> None:
        request.state.edge_route = _Tag(decision.route, decision.reason, decision.detail, ask.model)

    def _moved(self, old: BreakerState, new: BreakerState) -> None:
        self.metrics.set("edge_cloud_breaker_state", BREAKER_LEVEL[new])
        fields = {"event": "breaker", "from_state": old.value, "to_state": new.value}
        log.warning("cloud circuit breaker %s -> %s", old.value, new.value, extra=fields)


async def _first_byte(result: Any) -> Any:
    """For a local stream, wait for its first chunk, so that a failure before it can still go to the cloud."""
    if not isinstance(result, StreamingResponse):
        return result
    chunks: Any = result.body_iterator
    first = await anext(chunks)
    result.body_iterator = _chain(first, chunks)
    return result


async def _chain(first: Any, rest: Any) -> AsyncIterator[Any]:
    try:
        yield first
        async for chunk in rest:
            yield chunk
    finally:
        await rest.aclose()


async def _relay_stream(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The cloud's SSE bytes as they come; a cut mid-stream ends with an error event (status is already sent)."""
    try:
        if first:
            yield first
        async for chunk in rest:
            yield chunk
    except CloudUnavailableError as exc:
        error = {"error": {"message": str(exc), "type": "cloud_unavailable", "param": None, "code": "stream_cut"}}
        yield f"data: {json.dumps(error)}\n\n".encode()
    finally:
        await rest.aclose()  # type: ignore[attr-defined]


def _relay_response(status: int, content: bytes, content_type: str | None) -> Response:
    """The cloud's answer; an error that is not in the OpenAI shape is wrapped so OpenAI clients can show it."""
    if status >= 400:
        try:
            shaped = isinstance(json.loads(content).get("error"), dict)
        except (ValueError, AttributeError):
            shaped = False
        if not shaped:
            message = f"the cloud answered {status}: {content[:500].decode('utf-8', 'replace')}"
            error = {"error": {"message": message, "type": "cloud_error", "param": None, "code": str(status)}}
            return Response(json.dumps(error), status_code=status, media_type="application/json")
    return Response(content, status_code=status, media_type=content_type or "application/json")
