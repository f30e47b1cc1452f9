"""Hybrid serving end to end: a real daemon on loopback routes each request to SmolLM2 on the device or to a
real cloud — llama.cpp's own OpenAI server (`python -m llama_cpp.server`), or a recording server that shows
what was (never) sent. Every answer names its route and reason in headers, metrics and logs."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from edge_sdk.apps.daemon.pool import DirectorySource

pytestmark = pytest.mark.slow

QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
CHAT = {"model": "smollm2", "messages": QUESTION, "max_tokens": 12, "temperature": 0}
# ~2,600 tokens: beyond the device's 2,048-token context (only sent where the cloud is forbidden: never read).
LONG_PROMPT = "The quick brown fox jumps over the lazy dog. " * 260 + "\nWhat animal jumps?"


def route_of(response: httpx.Response) -> tuple[str, str]:
    return response.headers.get("x-edge-route", ""), response.headers.get("x-edge-route-reason", "")


def counter(url: str, name: str, **labels: str) -> float:
    wanted = name + ("{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}" if labels else "")
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(wanted + " "):
            return float(line.split()[-1])
    return 0.0


class Recorder:
    """A cloud that writes down every request it gets; `mode` makes it fail or answer in a non-OpenAI shape."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict, dict]] = []
        self.mode = "ok"

    async def handle(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append((request.url.path, dict(request.headers), body))
        if self.mode == "fail":
            return JSONResponse({"error": {"message": "upstream exploded", "type": "server_error"}}, status_code=500)
        if self.mode == "plain400":
            return PlainTextResponse("no such model upstream", status_code=400)
        if body.get("stream"):
            cut = self.mode == "cut"

            async def events():
                for word in ("from ", "the ", "cloud"):
                    yield f"data: {json.dumps({'choices': [{'index': 0, 'delta': {'content': word}}]})}\n\n"
                    if cut:
                        raise ConnectionResetError("the cloud went away mid-stream")
                yield "data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")
        message = {"role": "assistant", "content": "from the cloud"}
        return JSONResponse({"object": "chat.completion", "choices": [{"index": 0, "message": message}]})

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v1/{rest:path}", self.handle, methods=["POST"])])


@pytest.fixture(scope="module")
def recorder(serve_app):
    cloud = Recorder()
    with serve_app(cloud.app()) as url:
        cloud.url = url  # type: ignore[attr-defined]
        yield cloud


@pytest.fixture(scope="module")
def broken_llm(tmp_path_factory):
    """A bundle whose GGUF llama.cpp cannot load (cut short): a real local failure before the first byte."""
    from converters.gguf.zoo import smollm2_gguf_path
    from edge_sdk.bundle import BundleWriter, Recipe, RuntimeRequirement, SourceInfo
    from edge_sdk.types import Backend, QuantScheme, Task

    tmp = tmp_path_factory.mktemp("broken")
    cut = tmp / "cut.gguf"
    cut.write_bytes(smollm2_gguf_path().read_bytes()[:2_000_000])
    source = SourceInfo(kind="gguf", digest="sha256:0", description="truncated")
    writer = BundleWriter(
        name="broken-llm", version="1.0.0", task=Task.TEXT_GENERATION, created_by="tests", source=source
    )
    writer.add_variant(
        variant_id="gguf", backend=Backend.GGUF, files={"model.gguf": cut}, inputs=(), outputs=(),
        recipe=Recipe(quantization=QuantScheme.Q4_1, precision="q4_1"),
        runtime=RuntimeRequirement(package="llama-cpp-python", version="0.3.36", extra="gguf"),
    )  # fmt: skip
    return writer.write(tmp / "b")


@pytest.fixture(scope="module")
def hybrid(serve_bundles, smollm2_served_bundle, broken_llm, llama_server):
    """SmolLM2 on the device (one request at a time, SLO 1 ms), llama.cpp's server as the cloud."""
    source = DirectorySource([smollm2_served_bundle.root, broken_llm.root])
    with serve_bundles(source, concurrency_per_model=1, cloud_url=llama_server, cloud_api_key="device-7",
                       slo_ms=1) as url:  # fmt: skip
        yield url


def test_a_request_that_fits_is_answered_on_the_device(hybrid):
    r = httpx.post(f"{hybrid}/v1/chat/completions", json=CHAT, timeout=120)
    assert r.status_code == 200 and route_of(r) == ("local", "default")
    assert "Paris" in r.json()["choices"][0]["message"]["content"]


def test_a_model_not_installed_here_is_answered_by_the_cloud(hybrid):
    r = httpx.post(f"{hybrid}/v1/chat/completions", json={**CHAT, "model": "smollm2-big"}, timeout=120)
    assert r.status_code == 200 and route_of(r) == ("cloud", "not_installed")
    assert "Paris" in r.json()["choices"][0]["message"]["content"]


def test_a_prompt_beyond_the_local_context_goes_to_the_cloud(hybrid):
    # A short prompt, but with max_tokens it needs more than the device's 2,048 tokens; the cloud has 4,096.
    body = {"model": "smollm2", "prompt": "Name a colour. Answer:", "max_tokens": 2045, "temperature": 0,
            "stop": [".", "\n"]}  # fmt: skip
    r = httpx.post(f"{hybrid}/v1/completions", json=body, timeout=300)
    assert r.status_code == 200 and route_of(r) == ("cloud", "context")
    assert r.json()["usage"]["prompt_tokens"] + 2045 > 2048


def test_a_longer_local_context_keeps_that_request_on_the_device(serve_bundles, smollm2_served_bundle, recorder):
    body = {"model": "smollm2", "prompt": "Name a colour. Answer:", "max_tokens": 2045, "temperature": 0,
            "stop": [".", "\n"]}  # fmt: skip
    sent = len(recorder.requests)
    source = DirectorySource([smollm2_served_bundle.root])
    with serve_bundles(source, cloud_url=recorder.url, context=4096) as url:
        r = httpx.post(f"{url}/v1/completions", json=body, timeout=120)
        assert r.status_code == 200 and route_of(r) == ("local", "default")
        # ...and the limit the router uses is the one the engine has: beyond 4,096 it is the cloud's.
        r = httpx.post(f"{url}/v1/completions", json={**body, "max_tokens": 4095}, timeout=120)
        assert route_of(r) == ("cloud", "context")
    assert len(recorder.requests) == sent + 1


def test_the_caller_chooses_and_the_cloud_streams_through(hybrid):
    body = {**CHAT, "stream": True}
    headers = {"X-Edge-Route": "cloud"}
    with httpx.stream("POST", f"{hybrid}/v1/chat/completions", json=body, headers=headers, timeout=120) as r:
        assert r.status_code == 200 and route_of(r) == ("cloud", "caller")
        assert r.headers["content-type"].startswith("text/event-stream")
        # SSE comments (': ping', a slow upstream's keep-alive) pass through untouched; the events are data lines.
        lines = [line for line in r.iter_lines() if line and not line.startswith(":")]
    assert lines[-1] == "data: [DONE]" and all(line.startswith("data: ") for line in lines)
    text = "".join(json.loads(line[6:])["choices"][0]["delta"].get("content") or "" for line in lines[:-1])
    assert "Paris" in text
    r = httpx.post(f"{hybrid}/v1/chat/completions", json=CHAT, headers={"X-Edge-Route": "local"}, timeout=120)
    assert route_of(r) == ("local", "caller")
    r = httpx.post(f"{hybrid}/v1/chat/completions", json=CHAT, headers={"X-Edge-Route": "moon"}, timeout=120)
    assert r.status_code == 400 and "'auto', 'local', 'cloud'" in r.json()["error"]["message"]


def test_a_local_failure_before_the_first_byte_is_retried_in_the_cloud(hybrid):
    body = {**CHAT, "model": "broken-llm"}
    r = httpx.post(f"{hybrid}/v1/chat/completions", json=body, timeout=120)
    assert r.status_code == 200 and route_of(r) == ("cloud", "local_failed")
    with httpx.stream("POST", f"{hybrid}/v1/chat/completions", json={**body, "stream": True}, timeout=120) as r:
        assert route_of(r) == ("cloud", "local_failed")
        assert [line for line in r.iter_lines() if line][-1] == "data: [DONE]"


@contextlib.contextmanager
def occupied(url: str) -> Iterator[None]:
    """SmolLM2 busy with a long streamed generation for the duration of the block."""
    started, done = threading.Event(), threading.Event()
    long = {"model": "smollm2", "prompt": "Once upon a time", "max_tokens": 400, "temperature": 0.8, "stream": True}

    def occupy() -> None:
        with httpx.stream("POST", f"{url}/v1/completions", json=long, timeout=120) as r:
            for _ in r.iter_lines():
                started.set()
                if done.is_set():
                    break

    thread = threading.Thread(target=occupy)
    thread.start()
    try:
        assert started.wait(60)
        yield
    finally:
        done.set()
        thread.join(60)


def test_a_busy_device_sends_work_over_the_slo_to_the_cloud(hybrid):
    with occupied(hybrid):
        r = httpx.post(f"{hybrid}/v1/chat/completions", json=CHAT, timeout=120)
        assert r.status_code == 200 and route_of(r) == ("cloud", "slo")
    assert counter(hybrid, "edge_route_total", route="cloud", reason="slo") == 1
    assert counter(hybrid, "edge_route_total", route="local", reason="default") >= 1


def test_a_full_local_queue_sends_the_request_to_the_cloud_instead_of_429(
    serve_bundles, smollm2_served_bundle, recorder
):
    source = DirectorySource([smollm2_served_bundle.root])
    with (
        serve_bundles(source, cloud_url=recorder.url, concurrency_per_model=1, queue_per_model=0) as url,
        occupied(url),
    ):
        r = httpx.post(f"{url}/v1/chat/completions", json=CHAT, timeout=60)
        assert r.status_code == 200 and route_of(r) == ("cloud", "overloaded")
        r = httpx.post(f"{url}/v1/chat/completions", json=CHAT, headers={"X-Edge-Route": "local"}, timeout=60)
        assert r.status_code == 429 and route_of(r) == ("local", "caller")  # the caller asked for local: as before


def test_when_the_cloud_fails_work_the_device_can_do_stays_on_the_device(
    serve_bundles, smollm2_served_bundle, recorder
):
    from concurrent.futures import ThreadPoolExecutor

    source = DirectorySource([smollm2_served_bundle.root])
    options = {"cloud_url": recorder.url, "cloud_retries": 0, "breaker_failures": 1, "breaker_reset_s": 60}
    recorder.mode = "fail"
    try:
        with serve_bundles(source, concurrency_per_model=1, slo_ms=1, **options) as url, ThreadPoolExecutor(1) as pool:
            routes, sent = [], []
            for _ in range(2):  # first the cloud fails (and the breaker opens), then the breaker is open
                with occupied(url):
                    waiting = pool.submit(httpx.post, f"{url}/v1/chat/completions", json=CHAT, timeout=120)
                    deadline = time.monotonic() + 30  # until it waits for the device (over the SLO, but possible)
                    while counter(url, "edge_queue_depth", model="smollm2") < 1 and time.monotonic() < deadline:
                        time.sleep(0.02)
                r = waiting.result()
                assert r.status_code == 200 and "Paris" in r.json()["choices"][0]["message"]["content"]
                routes.append(route_of(r))
                sent.append(len(recorder.requests))
    finally:
        recorder.mode = "ok"
    assert routes == [("local", "cloud_failed"), ("local", "breaker_open")]
    assert sent[1] == sent[0]  # the first was tried in the cloud; with the breaker open the second was not sent


@pytest.fixture(scope="module")
def private(serve_bundles, smollm2_served_bundle, recorder):
    source = DirectorySource([smollm2_served_bundle.root])
    with serve_bundles(source, cloud_url=recorder.url, local_only_models=frozenset({"all"})) as url:
        yield url


def test_privacy_policy_never_sends_anything(private, recorder, caplog):
    caplog.set_level("INFO", logger="edge_sdk.route")
    before = len(recorder.requests)
    r = httpx.post(f"{private}/v1/chat/completions", json=CHAT, timeout=120)
    assert r.status_code == 200 and route_of(r) == ("local", "default")
    long = {"model": "smollm2", "prompt": LONG_PROMPT, "max_tokens": 8}
    for body, headers, status in [
        (long, {}, 400),  # too long for the device, and the cloud is forbidden
        ({**long, "stream": True}, {}, 400),
        ({**long, "model": "elsewhere"}, {}, 404),
        ({**long, "prompt": "Hi"}, {"X-Edge-Route": "cloud"}, 403),
    ]:
        r = httpx.post(f"{private}/v1/completions", json=body, headers=headers, timeout=120)
        assert r.status_code == status and route_of(r) == ("reject", "privacy"), r.text
        assert r.json()["error"]["code"] == "privacy" and "privacy policy" in r.json()["error"]["message"]
    assert len(recorder.requests) == before  # nothing, ever
    assert counter(private, "edge_route_total", route="reject", reason="privacy") == 4
    logged = [r.getMessage() for r in caplog.records if r.name == "edge_sdk.route"]
    assert sum("route=reject reason=privacy model=elsewhere status=404" in m for m in logged) == 1


def test_serve_command_takes_the_cloud_flags(smollm2_served_bundle, recorder, tmp_path):
    import socket
    import subprocess
    import sys

    key = tmp_path / "cloud.key"
    key.write_text("device-from-file\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "edge_sdk.cli", "serve", str(smollm2_served_bundle.root), "--port", str(port),
           "--cloud-url", recorder.url, "--cloud-key-file", str(key), "--privacy", "smollm2",
           "--context", "4096"]  # fmt: skip
    log = tmp_path / "serve.log"
    daemon = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log.open("wb"))
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                httpx.get(f"{url}/health/live", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        r = httpx.post(f"{url}/v1/chat/completions", json={**CHAT, "model": "elsewhere"}, timeout=60)
        assert r.status_code == 200 and route_of(r) == ("cloud", "not_installed")
        assert recorder.requests[-1][1]["authorization"] == "Bearer device-from-file"
        r = httpx.post(f"{url}/v1/chat/completions", json=CHAT, headers={"X-Edge-Route": "cloud"}, timeout=60)
        assert r.status_code == 403 and route_of(r) == ("reject", "privacy")
        long = {"model": "smollm2", "prompt": "Name a colour. Answer:", "max_tokens": 2045, "stop": [".", "\n"]}
        r = httpx.post(f"{url}/v1/completions", json={**long, "temperature": 0}, timeout=60)
        assert r.status_code == 200 and route_of(r) == ("local", "default")  # within --context 4096
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
    logged = log.read_text()
    assert "edge_sdk.route: route=cloud reason=not_installed model=elsewhere status=200" in logged
    assert "route=reject reason=privacy model=smollm2 status=403" in logged


@pytest.fixture(scope="module")
def fragile(serve_bundles, smollm2_served_bundle, recorder):
    """Budget too small for SmolLM2; the breaker opens after 2 failures and tries again after 1 s."""
    source = DirectorySource([smollm2_served_bundle.root])
    with serve_bundles(source, cloud_url=recorder.url, cloud_api_key="device-9", cloud_retries=0, breaker_failures=2,
                       breaker_reset_s=1.0, memory_budget_bytes=50 * 2**20) as url:  # fmt: skip
        yield url


def test_a_model_that_does_not_fit_memory_goes_to_the_cloud_with_the_device_key(fragile, recorder):
    recorder.mode = "ok"
    sent_by_caller = {"Authorization": "Bearer caller-key", "Idempotency-Key": "job-1"}
    r = httpx.post(f"{fragile}/v1/chat/completions", json={**CHAT, "top_k": 5}, headers=sent_by_caller, timeout=60)
    assert r.status_code == 200 and route_of(r) == ("cloud", "no_memory")
    assert r.json()["choices"][0]["message"]["content"] == "from the cloud"
    path, headers, body = recorder.requests[-1]
    assert path == "/v1/chat/completions" and headers["authorization"] == "Bearer device-9"  # not the caller's
    assert headers["idempotency-key"] == "job-1"
    assert body["top_k"] == 5  # forwarded as sent, with fields the device does not use
    r = httpx.post(f"{fragile}/v1/embeddings", json={"model": "smollm2", "input": ["a cat"]}, timeout=60)
    assert r.status_code == 200 and route_of(r) == ("cloud", "no_memory")
    assert recorder.requests[-1][0] == "/v1/embeddings" and recorder.requests[-1][2]["input"] == ["a cat"]


def test_cloud_errors_come_back_in_the_openai_shape(fragile, recorder):
    recorder.mode = "plain400"
    try:
        r = httpx.post(f"{fragile}/v1/chat/completions", json=CHAT, timeout=60)
    finally:
        recorder.mode = "ok"
    assert r.status_code == 400 and route_of(r) == ("cloud", "no_memory")
    assert "no such model upstream" in r.json()["error"]["message"]


def test_a_cloud_stream_cut_midway_ends_with_an_error_event(fragile, recorder):
    recorder.mode = "cut"
    try:
        with httpx.stream("POST", f"{fragile}/v1/chat/completions", json={**CHAT, "stream": True}, timeout=60) as r:
            assert r.status_code == 200 and route_of(r) == ("cloud", "no_memory")
            lines = [line for line in r.iter_lines() if line]
    finally:
        recorder.mode = "ok"
    assert json.loads(lines[0][6:])["choices"][0]["delta"]["content"] == "from "  # what arrived, passed on
    error = json.loads(lines[-1][6:])["error"]
    assert error["code"] == "stream_cut" and "broke after" in error["message"]
    assert "data: [DONE]" not in lines  # the client can tell it is incomplete


def test_breaker_opens_fails_fast_half_opens_and_closes(fragile, recorder):
    assert httpx.post(f"{fragile}/v1/chat/completions", json=CHAT, timeout=60).status_code == 200  # none in a row
    recorder.mode = "fail"
    try:
        for _ in range(2):
            r = httpx.post(f"{fragile}/v1/chat/completions", json=CHAT, timeout=60)
            assert r.status_code == 502 and route_of(r) == ("cloud", "no_memory")
            assert r.json()["error"]["type"] == "cloud_unavailable"
        sent = len(recorder.requests)
        start = time.perf_counter()
        r = httpx.post(f"{fragile}/v1/chat/completions", json=CHAT, timeout=60)
        fail_fast = time.perf_counter() - start
        assert r.status_code == 503 and route_of(r) == ("reject", "breaker_open")
        assert r.headers["retry-after"] == "1" and len(recorder.requests) == sent  # nothing was sent
        assert fail_fast < 0.5
        assert counter(fragile, "edge_cloud_breaker_state") == 2
        time.sleep(1.05)  # cool-down over: one trial goes through, fails, and the breaker opens again
        r = httpx.post(f"{fragile}/v1/chat/completions", json=CHAT, timeout=60)
        assert r.status_code == 502 and len(recorder.requests) == sent + 1
        assert route_of(httpx.post(f"{fragile}/v1/chat/completions", json=CHAT, timeout=60))[1] == "breaker_open"
        recorder.mode = "ok"
        time.sleep(1.05)  # the next trial succeeds and closes it
        r = httpx.post(f"{fragile}/v1/chat/completions", json=CHAT, timeout=60)
        assert r.status_code == 200 and route_of(r) == ("cloud", "no_memory")
        assert counter(fragile, "edge_cloud_breaker_state") == 0
    finally:
        recorder.mode = "ok"


def test_without_a_cloud_the_daemon_answers_as_before(serve_bundles, smollm2_served_bundle):
    with serve_bundles(DirectorySource([smollm2_served_bundle.root])) as url:
        _answers_as_before(url)


def _answers_as_before(llm_daemon: str) -> None:
    r = httpx.post(f"{llm_daemon}/v1/chat/completions", json={**CHAT, "model": "gpt-4o"}, timeout=60)
    assert r.status_code == 404 and "not installed here" in r.json()["error"]["message"]
    r = httpx.post(f"{llm_daemon}/v1/chat/completions", json=CHAT, headers={"X-Edge-Route": "cloud"}, timeout=60)
    assert r.status_code == 503 and route_of(r) == ("reject", "no_cloud")
    r = httpx.post(f"{llm_daemon}/v1/chat/completions", json=CHAT, headers={"X-Edge-Route": "moon"}, timeout=60)
    assert r.status_code == 400 and route_of(r) == ("reject", "caller")
    r = httpx.post(f"{llm_daemon}/v1/chat/completions", json=CHAT, timeout=120)
    assert r.status_code == 200 and route_of(r) == ("local", "default")


def test_requests_refused_before_routing_still_say_so(serve_bundles, smollm2_served_bundle):
    """A malformed body, a wrong API key and a body over the limit never reach the router: reject / invalid."""
    source = DirectorySource([smollm2_served_bundle.root])
    with serve_bundles(source, api_keys=frozenset({"k"}), max_body_bytes=4096) as url:
        chat, key = f"{url}/v1/chat/completions", {"Authorization": "Bearer k"}
        malformed = httpx.post(chat, json={"model": "smollm2", "messages": "hi"}, headers=key)
        wrong_key = httpx.post(chat, json=CHAT, headers={"Authorization": "Bearer nope"})
        too_big = httpx.post(chat, json={**CHAT, "padding": "x" * 8000}, headers=key)
        assert [r.status_code for r in (malformed, wrong_key, too_big)] == [400, 401, 413]
        assert {route_of(r) for r in (malformed, wrong_key, too_big)} == {("reject", "invalid")}
        metrics = httpx.get(f"{url}/metrics", headers=key).text
        assert 'edge_route_total{reason="invalid",route="reject"} 3' in metrics
