"""CloudClient against real servers on loopback: a small app that fails on demand, and llama.cpp's own server."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections import defaultdict

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from cloud_sync.breaker import BreakerState, CircuitBreaker
from cloud_sync.client import CloudClient, RetryPolicy, parse_retry_after
from edge_sdk.errors import BreakerOpenError, CloudError, CloudResponseError, CloudUnavailableError, EdgeSDKError

FAST = RetryPolicy(attempts=3, base_delay_s=0.01, max_delay_s=0.05)


class Flaky:
    """Each route fails the first `fail` calls of a test's key, then answers; every arrival is recorded."""

    def __init__(self) -> None:
        self.arrivals: dict[str, list[float]] = defaultdict(list)
        self.healthy = True

    def seen(self, request: Request) -> int:
        key = request.query_params.get("key", "")
        self.arrivals[key].append(time.monotonic())
        return len(self.arrivals[key])

    async def fail_then_ok(self, request: Request) -> Response:
        n = self.seen(request)
        if n <= int(request.query_params.get("fail", "0")):
            return JSONResponse({"error": "try again"}, status_code=503)
        return JSONResponse({"echo": await request.json(), "calls": n, "auth": request.headers.get("authorization")})

    async def rate_limited(self, request: Request) -> Response:
        if self.seen(request) == 1:
            return JSONResponse(
                {"error": "slow down"}, status_code=429, headers={"Retry-After": request.query_params["after"]}
            )
        return JSONResponse({"ok": True})

    async def down(self, request: Request) -> Response:
        self.seen(request)
        return JSONResponse({"error": "down"}, status_code=500 if not self.healthy else 200)

    async def bad_request(self, request: Request) -> Response:
        self.seen(request)
        return JSONResponse({"error": {"message": "no such model", "type": "invalid_request_error"}}, status_code=404)

    async def slow(self, request: Request) -> Response:
        self.seen(request)
        await asyncio.sleep(float(request.query_params["sleep"]))
        return JSONResponse({"ok": True})

    async def sse(self, request: Request) -> Response:
        n = self.seen(request)
        cut_before = n <= int(request.query_params.get("cut_before", "0"))
        cut_after = int(request.query_params.get("cut_after", "0"))

        async def events():
            if cut_before:
                raise RuntimeError("connection lost before the first byte")
            for i in range(5):
                if cut_after and i == cut_after:
                    raise RuntimeError("connection lost mid-stream")
                yield f"data: {json.dumps({'i': i})}\n\n".encode()
                await asyncio.sleep(0.01)
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/ok", self.fail_then_ok, methods=["POST"]),
                Route("/limited", self.rate_limited, methods=["POST"]),
                Route("/down", self.down, methods=["POST"]),
                Route("/missing", self.bad_request, methods=["POST"]),
                Route("/slow", self.slow, methods=["POST"]),
                Route("/sse", self.sse, methods=["POST"]),
            ]
        )


@pytest.fixture(scope="module")
def flaky(serve_app):
    server = Flaky()
    with serve_app(server.app()) as url:
        server.url = url  # type: ignore[attr-defined]
        yield server


def run(coro):
    return asyncio.run(coro)


async def _post(url, path, **client_options):
    async with CloudClient(url, **client_options) as client:
        return await client.post_json(path, {"q": 1})


async def _collect(url, path, **client_options) -> bytes:
    async with CloudClient(url, **client_options) as client:
        return b"".join([piece async for piece in client.stream(path, {"stream": True})])


def test_errors_belong_to_the_tree():
    assert issubclass(BreakerOpenError, CloudUnavailableError)
    assert issubclass(CloudUnavailableError, EdgeSDKError) and issubclass(CloudUnavailableError, ConnectionError)
    assert issubclass(CloudResponseError, CloudError)


def test_retries_5xx_then_succeeds_with_the_key(flaky):
    response = run(_post(flaky.url, "/ok?key=a&fail=2", api_key="dev-1", retry=FAST))
    assert response.status_code == 200
    assert response.json() == {"echo": {"q": 1}, "calls": 3, "auth": "Bearer dev-1"}


def test_gives_up_after_the_attempts_with_a_typed_error(flaky):
    with pytest.raises(CloudUnavailableError, match=r"after 3 attempts: HTTP 503"):
        run(_post(flaky.url, "/ok?key=b&fail=10", retry=FAST))
    assert len(flaky.arrivals["b"]) == 3


def test_backoff_grows_exponentially_with_jitter():
    policy = RetryPolicy(base_delay_s=1.0, multiplier=2.0, max_delay_s=5.0, jitter=0.5)
    for retry, full in [(0, 1.0), (1, 2.0), (2, 4.0), (3, 5.0), (8, 5.0)]:
        delays = [policy.backoff(retry) for _ in range(200)]
        assert all(full * 0.5 <= d <= full for d in delays)
        assert max(delays) - min(delays) > full * 0.2  # spread, so devices do not retry in lockstep


def test_retry_after_is_honoured(flaky):
    start = time.monotonic()
    response = run(_post(flaky.url, "/limited?key=c&after=1", retry=FAST))
    assert response.status_code == 200
    first, second = flaky.arrivals["c"]
    assert second - first >= 0.95  # not the 10 ms backoff: the server's Retry-After
    assert time.monotonic() - start < 5


def test_a_retry_after_beyond_the_policy_is_not_waited_for(flaky):
    start = time.monotonic()
    with pytest.raises(CloudUnavailableError) as info:
        run(_post(flaky.url, "/limited?key=d&after=120", retry=FAST))
    assert info.value.retry_after_s == 120
    assert time.monotonic() - start < 2 and len(flaky.arrivals["d"]) == 1


def test_parse_retry_after_dates():
    assert parse_retry_after("7") == 7 and parse_retry_after(" 0.5 ") == 0.5
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    in_a_minute = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 60))
    assert 55 <= parse_retry_after(in_a_minute) <= 61  # type: ignore[operator]


def test_client_errors_are_returned_not_retried(flaky):
    response = run(_post(flaky.url, "/missing?key=e", retry=FAST))
    assert response.status_code == 404 and len(flaky.arrivals["e"]) == 1


def test_unreachable_cloud_and_timeouts_raise_cloud_unavailable(flaky):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        nobody = f"http://127.0.0.1:{s.getsockname()[1]}"
    with pytest.raises(CloudUnavailableError, match="ConnectError"):
        run(_post(nobody, "/ok", retry=FAST))
    with pytest.raises(CloudUnavailableError, match="Timeout"):
        run(_post(flaky.url, "/slow?key=f&sleep=1", retry=FAST, timeout=0.2))
    assert len(flaky.arrivals["f"]) == 3


def test_stream_passes_sse_through(flaky):
    body = run(_collect(flaky.url, "/sse?key=g", retry=FAST)).decode()
    events = [e for e in body.split("\n\n") if e]
    assert events[0] == 'data: {"i": 0}' and events[-1] == "data: [DONE]" and len(events) == 6


def test_stream_is_retried_before_the_first_byte(flaky):
    body = run(_collect(flaky.url, "/sse?key=h&cut_before=2", retry=FAST))
    assert body.endswith(b"data: [DONE]\n\n") and len(flaky.arrivals["h"]) == 3


def test_stream_cut_after_the_first_byte_is_not_retried(flaky):
    got: list[bytes] = []

    async def consume():
        async with CloudClient(flaky.url, retry=FAST) as client:
            async for piece in client.stream("/sse?key=i&cut_after=2", {}):
                got.append(piece)

    with pytest.raises(CloudUnavailableError, match="broke after"):
        run(consume())
    assert b'data: {"i": 0}' in b"".join(got)
    assert len(flaky.arrivals["i"]) == 1


def test_stream_error_status_carries_the_clouds_answer(flaky):
    with pytest.raises(CloudResponseError) as info:
        run(_collect(flaky.url, "/missing?key=j", retry=FAST))
    assert info.value.status_code == 404 and b"no such model" in info.value.body


def test_breaker_opens_fails_fast_half_opens_and_closes(flaky):
    changes: list[tuple[str, str]] = []
    breaker = CircuitBreaker(failure_threshold=3, reset_after_s=0.5, on_change=lambda a, b: changes.append((a, b)))

    async def scenario():
        async with CloudClient(flaky.url, retry=RetryPolicy(attempts=1), breaker=breaker) as client:
            flaky.healthy = False
            for _ in range(3):
                with pytest.raises(CloudUnavailableError):
                    await client.post_json("/down?key=k", {})
            assert breaker.state is BreakerState.OPEN
            arrived = len(flaky.arrivals["k"])
            start = time.perf_counter()
            with pytest.raises(BreakerOpenError) as info:
                await client.post_json("/down?key=k", {})
            fail_fast = time.perf_counter() - start
            assert 0 < info.value.retry_after_s <= 0.5  # type: ignore[operator]
            assert len(flaky.arrivals["k"]) == arrived  # nothing was sent
            await asyncio.sleep(0.55)
            assert breaker.state is BreakerState.HALF_OPEN
            with pytest.raises(CloudUnavailableError):  # the trial fails: open again
                await client.post_json("/down?key=k", {})
            assert breaker.state is BreakerState.OPEN and len(flaky.arrivals["k"]) == arrived + 1
            await asyncio.sleep(0.55)
            flaky.healthy = True
            assert (await client.post_json("/down?key=k", {})).status_code == 200  # the trial succeeds
            assert breaker.state is BreakerState.CLOSED
            return fail_fast

    try:
        fail_fast = run(scenario())
    finally:
        flaky.healthy = True
    assert fail_fast < 0.05
    assert changes == [("closed", "open"), ("open", "half_open"), ("half_open", "open"), ("open", "half_open"),
                       ("half_open", "closed")]  # fmt: skip


def test_half_open_lets_one_trial_through():
    breaker = CircuitBreaker(failure_threshold=1, reset_after_s=0.05)
    breaker.record_failure()
    time.sleep(0.06)
    breaker.allow()  # the trial
    with pytest.raises(BreakerOpenError):
        breaker.allow()  # others fail fast while it runs
    breaker.record_success()
    breaker.allow()
    assert breaker.state is BreakerState.CLOSED


@pytest.mark.slow
def test_real_openai_server_answers_and_streams(llama_server):
    ask = "What is the capital of France? Answer in one word."
    question = {"model": "smollm2", "messages": [{"role": "user", "content": ask}], "max_tokens": 12, "temperature": 0}

    async def both():
        async with CloudClient(llama_server, api_key="k", timeout=60) as client:
            reply = await client.post_json("/v1/chat/completions", question)
            pieces = [p async for p in client.stream("/v1/chat/completions", {**question, "stream": True})]
        return reply, b"".join(pieces).decode()

    reply, streamed = run(both())
    assert reply.status_code == 200 and "Paris" in reply.json()["choices"][0]["message"]["content"]
    events = [e for e in streamed.replace("\r\n", "\n").split("\n\n") if e.strip()]
    assert events[-1].strip() == "data: [DONE]" and len(events) > 3
    text = "".join(
        json.loads(e.strip()[6:])["choices"][0]["delta"].get("content") or "" for e in events[:-1] if "data: {" in e
    )
    assert "Paris" in text


def test_bad_url_is_refused():
    from edge_sdk.errors import ConfigError

    with pytest.raises(ConfigError, match="http:// or https://"):
        CloudClient("ftp://cloud")
    with pytest.raises(ConfigError, match="attempts"):
        RetryPolicy(attempts=0)
