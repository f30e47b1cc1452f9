"""The device's HTTP client for its cloud target (any OpenAI-compatible server, or the project's gateway).

Connection errors, timeouts, 5xx and 429 are retried with exponential backoff and jitter; a `Retry-After`
from the cloud is honoured (a wait longer than the policy allows ends the retries at once, and the error
carries it). A circuit breaker, when given, sees every attempt and makes calls fail fast while it is open.
Streams are retried only until their first byte: after that the bytes are someone's answer already.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from cloud_sync import http
from cloud_sync.breaker import CircuitBreaker
from cloud_sync.retry import RETRY_STATUSES, RetryPolicy, parse_retry_after
from edge_sdk.errors import CloudResponseError, CloudUnavailableError, ConfigError

if TYPE_CHECKING:
    import httpx  # imported when a request is made: a daemon without a cloud never pays its ~50 ms at start

__all__ = ["RETRY_STATUSES", "CloudClient", "RetryPolicy", "parse_retry_after"]  # the policy lives in retry.py

log = logging.getLogger("edge_sdk.cloud")

DEFAULT_TIMEOUT_S = 60.0  # per attempt; connecting is bounded apart (http.CONNECT_TIMEOUT_S)


class _Retryable(Exception):
    """One failed attempt worth retrying: why, and how long the cloud asked us to wait."""

    def __init__(self, why: str, retry_after_s: float | None) -> None:
        super().__init__(why)
        self.why, self.retry_after_s = why, retry_after_s


class CloudClient:
    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT_S,
        retry: RetryPolicy | None = None,
        breaker: CircuitBreaker | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"cloud URL must start with http:// or https://, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.retry = retry or RetryPolicy()
        self.breaker = breaker
        self._http = http.async_client(self.base_url, api_key=api_key, timeout_s=timeout, transport=transport)

    async def post_json(self, path: str, body: Any, *, headers: Mapping[str, str] | None = None) -> httpx.Response:
        """POST `body` as JSON. Returns the response (2xx, or a 4xx retrying cannot fix, for the caller to read).

        Raises CloudUnavailableError when every attempt failed, BreakerOpenError when failing fast.
        """
        import httpx

        attempt = 0
        while True:
            self._allow()
            try:
                response = await self._http.post(path, json=body, headers=dict(headers or {}))
            except httpx.TransportError as exc:
                failure = _Retryable(f"{type(exc).__name__}: {exc}", None)
                self._failed(None)
            else:
                if response.status_code not in RETRY_STATUSES:
                    self._succeeded()
                    return response
                failure = _status_failure(response)
                self._failed(response.status_code)
            attempt += 1
            await self._wait_or_give_up(path, attempt, failure)

    async def stream(self, path: str, body: Any, *, headers: Mapping[str, str] | None = None) -> AsyncIterator[bytes]:
        """POST `body` as JSON and yield the response body as it arrives (SSE passes through untouched).

        Retries until the first byte; a 4xx answer raises CloudResponseError with the cloud's status and body;
        a connection cut after the first byte raises CloudUnavailableError (nothing is retried then).
        """
        import httpx

        attempt = 0
        while True:
            self._allow()
            failure: _Retryable
            try:
                async with self._http.stream("POST", path, json=body, headers=dict(headers or {})) as response:
                    if response.status_code in RETRY_STATUSES:
                        await response.aread()
                        failure = _status_failure(response)
                        self._failed(response.status_code)
                    elif response.status_code >= 400:
                        content = await response.aread()
                        self._succeeded()  # the cloud is up; the request is what it refused
                        raise CloudResponseError(
                            f"the cloud answered {response.status_code}: {content[:300].decode('utf-8', 'replace')}",
                            status_code=response.status_code,
                            body=content,
                        )
                    else:
                        async for piece in self._pieces(response):
                            yield piece
                        return
            except httpx.TransportError as exc:
                failure = _Retryable(f"{type(exc).__name__}: {exc}", None)
                self._failed(None)
            attempt += 1
            await self._wait_or_give_up(path, attempt, failure)

    async def _pieces(self, response: httpx.Response) -> AsyncIterator[bytes]:
        """The body; a failure before the first byte propagates as TransportError (and is retried)."""
        import httpx

        chunks = response.aiter_bytes()  # decoded: a gzip-encoded stream would be garbage once re-sent plain
        first = await anext(chunks, b"")  # TransportError here means nothing reached the caller yet
        self._succeeded()
        if not first:
            return
        yield first
        sent = len(first)
        try:
            async for chunk in chunks:
                sent += len(chunk)
                yield chunk
        except httpx.TransportError as exc:
            self._failed(None)
            raise CloudUnavailableError(
                f"the cloud's stream from {self.base_url} broke after {sent} bytes: {type(exc).__name__}: {exc}"
            ) from exc

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> CloudClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _allow(self) -> None:
        if self.breaker is not None:
            self.breaker.allow()

    def _succeeded(self) -> None:
        if self.breaker is not None:
            self.breaker.record_success()

    def _failed(self, status: int | None) -> None:
        # A 429 says the cloud is up but busy: retry it, but it is no sign of an outage.
        if self.breaker is not None and status != 429:
            self.breaker.record_failure()

    async def _wait_or_give_up(self, path: str, attempt: int, failure: _Retryable) -> None:
        policy = self.retry
        asked = failure.retry_after_s
        fields = {"event": "cloud_attempt", "url": f"{self.base_url}{path}", "attempt": attempt, "error": failure.why}
        if attempt >= policy.attempts or (asked is not None and asked > policy.max_retry_after_s):
            tries = f"{attempt} attempt{'s' if attempt > 1 else ''}"
            log.warning(
                "cloud call to %s%s failed on attempt %d, giving up: %s",
                *(self.base_url, path, attempt, failure.why),
                extra={**fields, "outcome": "gave_up"},
            )
            raise CloudUnavailableError(
                f"the cloud at {self.base_url}{path} did not answer after {tries}: {failure.why}",
                retry_after_s=asked,
            )
        delay = max(policy.backoff(attempt - 1), asked or 0.0)
        fields |= {"outcome": "retry", "retry_in_s": round(delay, 3)}
        log.warning(
            "cloud call to %s%s failed on attempt %d, retrying in %.1f s: %s",
            *(self.base_url, path, attempt, delay, failure.why),
            extra=fields,
        )
        await asyncio.sleep(delay)


def _status_failure(response: httpx.Response) -> _Retryable:
    text = response.content[:200].decode("utf-8", "replace") if response.is_stream_consumed else ""
    return _Retryable(
        f"HTTP {response.status_code} {text}".strip(), parse_retry_after(response.headers.get("retry-after"))
    )
