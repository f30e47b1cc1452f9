"""`edge-sdk cloud serve` as a real process: device keys, telemetry, own bundles, and pass-through to a real
llama.cpp OpenAI server (`python -m llama_cpp.server`) for the models the gateway does not have."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest
from gateway_helpers import DEVICE_KEY, OTHER_KEY, PUBLISHER_KEY, auth, free_port

from cloud_sync.telemetry import TelemetryStore

pytestmark = pytest.mark.slow

UPSTREAM_KEY = "upstream-secret-key-0004"
CLOUD_MODEL = "smollm2-cloud"  # only the upstream has it
CHAT = {"messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 12, "temperature": 0, "seed": 1}


def _start(command: Callable[[int], list[str]], ready_path: str, headers: dict[str, str], log: Path):
    """Start a server on a free port; a port another process took meanwhile is retried on a new one.

    Ready means our process logged that it listens there and answers: never someone else's server.
    """
    for _ in range(3):
        port = free_port()
        args = command(port)
        proc = subprocess.Popen(args, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
        url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 90
        while proc.poll() is None and time.monotonic() < deadline:
            if f"running on {url}" in log.read_text():
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(url + ready_path, headers=headers, timeout=2).status_code == 200:
                        return proc, url
            time.sleep(0.2)
        if proc.poll() is None:
            _stop(proc)
            raise AssertionError(f"{args[:4]} not ready in 90 s: {log.read_text()[-2000:]}")
        if "address already in use" not in log.read_text():
            raise AssertionError(f"{args[:4]} exited: {log.read_text()[-2000:]}")
    raise AssertionError(f"no free port found for {args[:4]} in 3 tries")


def _stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


@pytest.fixture(scope="module")
def upstream(tmp_path_factory) -> Iterator[str]:
    """llama.cpp's own OpenAI-compatible server with SmolLM2, playing the hosted engine behind the gateway."""
    from converters.gguf.zoo import smollm2_gguf_path

    def command(port: int) -> list[str]:
        args = [sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2_gguf_path())]
        args += ["--model_alias", CLOUD_MODEL, "--api_key", UPSTREAM_KEY, "--host", "127.0.0.1", "--port", str(port)]
        return [*args, "--n_ctx", "1024", "--n_threads", "1", "--verbose", "False"]

    proc, url = _start(command, "/v1/models", auth(UPSTREAM_KEY), tmp_path_factory.mktemp("upstream") / "log")
    yield url
    _stop(proc)


@pytest.fixture(scope="module")
def own_bundle(tmp_path_factory):
    from converters.gguf.zoo import smollm2_as_shipped

    return smollm2_as_shipped(tmp_path_factory.mktemp("own") / "smollm2")


@pytest.fixture(scope="module")
def gateway(upstream, own_bundle, key_files, tmp_path_factory) -> Iterator[dict[str, object]]:
    base = tmp_path_factory.mktemp("gateway")
    (base / "upstream.key").write_text(UPSTREAM_KEY + "\n")

    def command(port: int) -> list[str]:
        args = [sys.executable, "-m", "edge_sdk.cli", "cloud", "serve", str(own_bundle.root)]
        args += ["--device-keys", str(key_files["devices"]), "--publisher-keys", str(key_files["publishers"])]
        args += ["--registry", str(base / "registry"), "--port", str(port), "--concurrency", "1"]
        return [*args, "--upstream", upstream, "--upstream-key-file", str(base / "upstream.key")]

    proc, url = _start(command, "/health/live", {}, base / "log")
    yield {"url": url, "dir": base}
    _stop(proc)


def test_device_keys(gateway):
    url = gateway["url"]
    assert httpx.get(f"{url}/health/live").status_code == 200  # health stays public for load balancers
    for headers in ({}, auth("wrong-key-0000000000000"), {"Authorization": DEVICE_KEY}):
        refused = httpx.get(f"{url}/v1/models", headers=headers)
        assert refused.status_code == 401
        assert "missing or unknown device key" in refused.json()["error"]["message"]
    models = httpx.get(f"{url}/v1/models", headers=auth(DEVICE_KEY))
    assert models.status_code == 200 and [m["id"] for m in models.json()["data"]] == ["smollm2"]
    assert httpx.get(f"{url}/v1/registry/bundles", headers=auth(OTHER_KEY)).status_code == 200

    metrics = httpx.get(f"{url}/metrics", headers=auth(PUBLISHER_KEY)).text
    assert 'edge_gateway_requests_total{device="pi-kitchen",status="200"} 1' in metrics
    assert 'edge_gateway_requests_total{device="jetson-garage",status="200"} 1' in metrics
    assert 'edge_gateway_requests_total{device="unknown",status="401"} 3' in metrics
    log = (gateway["dir"] / "log").read_text()
    assert "device=pi-kitchen GET /v1/models -> 200" in log


def test_telemetry_is_stored_once_per_key_and_per_device(gateway):
    url = gateway["url"]
    batch = {"device": "pi-kitchen", "items": [{"metric": "tokens_per_s", "value": v} for v in (11.0, 12.5, 9.8)]}
    headers = {**auth(DEVICE_KEY), "Idempotency-Key": "telemetry-0001"}
    first = httpx.post(f"{url}/v1/telemetry", json=batch, headers=headers)
    assert first.status_code == 202 and first.json() == {"device": "pi-kitchen", "accepted": 3, "duplicate": False}
    repeat = httpx.post(f"{url}/v1/telemetry", json=batch, headers=headers)  # a redelivery after a lost answer
    assert repeat.json() == {"device": "pi-kitchen", "accepted": 0, "duplicate": True}
    other = httpx.post(f"{url}/v1/telemetry", json={"items": [{"up": 1}]}, headers=auth(OTHER_KEY))
    assert other.json()["device"] == "jetson-garage"  # the key says who it is
    spoofed = httpx.post(f"{url}/v1/telemetry", json=batch, headers=auth(OTHER_KEY))
    assert spoofed.status_code == 403 and "may not send telemetry for 'pi-kitchen'" in spoofed.text
    bad = httpx.post(f"{url}/v1/telemetry", json={"items": "nope"}, headers=auth(DEVICE_KEY))
    assert bad.status_code == 400 and "items" in bad.text

    assert httpx.get(f"{url}/v1/telemetry", headers=auth(DEVICE_KEY)).json() == {"device": "pi-kitchen", "items": 3}
    metrics = httpx.get(f"{url}/metrics", headers=auth(DEVICE_KEY)).text
    assert 'edge_gateway_telemetry_items_total{device="pi-kitchen"} 3' in metrics
    stored = TelemetryStore(gateway["dir"] / "registry" / "telemetry.sqlite3")  # on disk, committed
    try:
        assert stored.count("pi-kitchen") == 3 and stored.count("jetson-garage") == 1
        assert [i["value"] for i in stored.items("pi-kitchen")] == [11.0, 12.5, 9.8]
    finally:
        stored.close()


def test_pass_through_to_llama_cpp_server(gateway, upstream):
    url = gateway["url"]
    direct = httpx.post(f"{upstream}/v1/chat/completions", json={**CHAT, "model": CLOUD_MODEL},
                        headers=auth(UPSTREAM_KEY), timeout=120)  # fmt: skip
    assert direct.status_code == 200, direct.text
    expected = direct.json()["choices"][0]["message"]["content"]
    assert expected.strip()

    passed = httpx.post(f"{url}/v1/chat/completions", json={**CHAT, "model": CLOUD_MODEL},
                        headers=auth(DEVICE_KEY), timeout=120)  # fmt: skip
    assert passed.status_code == 200, passed.text
    assert passed.headers["x-edge-gateway"] == "upstream"
    assert passed.json()["model"] == CLOUD_MODEL
    assert passed.json()["choices"][0]["message"]["content"] == expected  # greedy: the upstream's own answer

    # streaming, through the official OpenAI client a device would use: SSE in, SSE out
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=DEVICE_KEY, max_retries=0, timeout=120)
    with client.chat.completions.with_streaming_response.create(model=CLOUD_MODEL, stream=True, **CHAT) as raw:
        assert raw.headers["x-edge-gateway"] == "upstream"
        assert raw.headers["content-type"].startswith("text/event-stream")
        pieces = [c.choices[0].delta.content or "" for c in raw.parse() if c.choices]
    assert len(pieces) > 2 and "".join(pieces) == expected

    # the upstream's refusals come back as they are (here: a prompt over its context)
    too_long = {**CHAT, "model": CLOUD_MODEL, "messages": [{"role": "user", "content": "word " * 3000}]}
    refused = httpx.post(f"{url}/v1/chat/completions", json=too_long, headers=auth(DEVICE_KEY), timeout=120)
    assert refused.status_code == 400 and refused.headers["x-edge-gateway"] == "upstream"


def test_own_bundle_is_answered_locally(gateway):
    body = {**CHAT, "model": "smollm2"}
    local = httpx.post(f"{gateway['url']}/v1/chat/completions", json=body, headers=auth(DEVICE_KEY), timeout=120)
    assert local.status_code == 200, local.text
    assert local.headers["x-edge-gateway"] == "local"
    assert local.json()["choices"][0]["message"]["content"].strip()
    metrics = httpx.get(f"{gateway['url']}/metrics", headers=auth(DEVICE_KEY)).text
    assert 'edge_generated_tokens_total{model="smollm2"}' in metrics  # the gateway's own daemon generated it


def test_unreachable_upstream_is_a_clear_502(key_files, tmp_path):
    from gateway_helpers import gateway_config, running_gateway

    from edge_sdk.daemon.pool import DirectorySource

    dead = f"http://127.0.0.1:{free_port()}"
    config = gateway_config(key_files, tmp_path / "registry", upstream_url=dead)
    with running_gateway(DirectorySource([]), config) as url:
        answer = httpx.post(f"{url}/v1/chat/completions", json={**CHAT, "model": "x"}, headers=auth(DEVICE_KEY))
    assert answer.status_code == 502
    assert f"model 'x' is not served here and the upstream {dead} is unreachable" in answer.json()["error"]["message"]


def test_device_leaving_mid_stream_closes_the_upstream_request(gateway):
    url = gateway["url"]
    body = {**CHAT, "model": CLOUD_MODEL, "max_tokens": 200, "stream": True}
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, headers=auth(DEVICE_KEY), timeout=120) as r:
        assert r.headers["x-edge-gateway"] == "upstream"
        first = next(r.iter_lines(), "")
        assert first.startswith("data: ")
    # leaving the block closed the connection after one event
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        metrics = httpx.get(f"{url}/metrics", headers=auth(DEVICE_KEY)).text
        if "edge_gateway_upstream_abandoned_total 1" in metrics:
            break
        time.sleep(0.1)
    assert "edge_gateway_upstream_abandoned_total 1" in metrics
    assert "device left mid-stream; closed the upstream request" in (gateway["dir"] / "log").read_text()
    after = httpx.post(f"{url}/v1/chat/completions", json={**CHAT, "model": CLOUD_MODEL}, headers=auth(DEVICE_KEY),
                       timeout=120)  # fmt: skip
    assert after.status_code == 200 and after.headers["x-edge-gateway"] == "upstream"
