"""`edge-sdk cloud serve` as a real process: device keys, telemetry, its own bundles, and pass-through to a real
llama.cpp OpenAI server (`python -m llama_cpp.server`) for the models it does not have.

Every test runs twice: with the gateway's state in SQLite files beside the registry, and in PostgreSQL."""

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
CLOUD_MODEL = "smollm2"  # only the upstream (tests/conftest.py's llama_server) has it
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
def gateway(llama_server, onnx_bundle, key_files, module_database_url, tmp_path_factory) -> Iterator[dict[str, object]]:
    """`edge-sdk cloud serve` with the digits CNN as its own bundle and llama.cpp's server as its upstream."""
    base = tmp_path_factory.mktemp("gateway")
    database = module_database_url or base / "registry" / "telemetry.sqlite3"  # where its telemetry lands
    (base / "upstream.key").write_text(UPSTREAM_KEY + "\n")

    def command(port: int) -> list[str]:
        args = [sys.executable, "-m", "edge_sdk.cli", "cloud", "serve", str(onnx_bundle.root)]
        args += ["--device-keys", str(key_files["devices"]), "--publisher-keys", str(key_files["publishers"])]
        args += ["--registry", str(base / "registry"), "--port", str(port), "--concurrency", "1"]
        args += ["--database-url", module_database_url] if module_database_url else []
        return [*args, "--upstream", llama_server, "--upstream-key-file", str(base / "upstream.key")]

    proc, url = _start(command, "/health/live", {}, base / "log")
    yield {"url": url, "dir": base, "database": database}
    _stop(proc)


def test_device_keys(gateway):
    url = gateway["url"]
    assert httpx.get(f"{url}/health/live").status_code == 200  # health stays public for load balancers
    ready = httpx.get(f"{url}/health/ready")  # a balancer's check: ready once its own bundle is loaded
    assert ready.status_code == 200 and ready.json()["preloaded"] == ["digits-cnn"], ready.text
    for headers in ({}, auth("wrong-key-0000000000000"), {"Authorization": DEVICE_KEY}):
        refused = httpx.get(f"{url}/v1/models", headers=headers)
        assert refused.status_code == 401
        assert "missing or unknown device key" in refused.json()["error"]["message"]
    models = httpx.get(f"{url}/v1/models", headers=auth(DEVICE_KEY))
    assert models.status_code == 200 and [m["id"] for m in models.json()["data"]] == ["digits-cnn"]
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
    expected = {"device": "pi-kitchen", "accepted": 3, "duplicate": False, "warnings": []}
    assert first.status_code == 202 and first.json() == expected
    repeat = httpx.post(f"{url}/v1/telemetry", json=batch, headers=headers)  # a redelivery after a lost answer
    assert repeat.headers["idempotent-replayed"] == "true" and repeat.json() == first.json()
    other = httpx.post(f"{url}/v1/telemetry", json={"items": [{"up": 1}]}, headers=auth(OTHER_KEY))
    assert other.json()["device"] == "jetson-garage"  # the key says who it is
    spoofed = httpx.post(f"{url}/v1/telemetry", json=batch, headers=auth(OTHER_KEY))
    assert spoofed.status_code == 403 and "may not send telemetry for 'pi-kitchen'" in spoofed.text
    bad = httpx.post(f"{url}/v1/telemetry", json={"items": "nope"}, headers=auth(DEVICE_KEY))
    assert bad.status_code == 400 and "items" in bad.text

    assert httpx.get(f"{url}/v1/telemetry", headers=auth(DEVICE_KEY)).json() == {"device": "pi-kitchen", "items": 3}
    metrics = httpx.get(f"{url}/metrics", headers=auth(DEVICE_KEY)).text
    assert 'edge_gateway_telemetry_items_total{device="pi-kitchen"} 3' in metrics
    stored = TelemetryStore(gateway["database"])  # committed, read back by another connection
    try:
        assert stored.count("pi-kitchen") == 3 and stored.count("jetson-garage") == 1
        assert [i["value"] for i in stored.items("pi-kitchen")] == [11.0, 12.5, 9.8]
    finally:
        stored.close()


def test_pass_through_to_llama_cpp_server(gateway, llama_server):
    url = gateway["url"]
    direct = httpx.post(f"{llama_server}/v1/chat/completions", json={**CHAT, "model": CLOUD_MODEL}, timeout=120)
    assert direct.status_code == 200, direct.text
    expected = direct.json()["choices"][0]["message"]["content"]
    assert expected.strip()

    passed = httpx.post(f"{url}/v1/chat/completions", json={**CHAT, "model": CLOUD_MODEL},
                        headers=auth(DEVICE_KEY), timeout=120)  # fmt: skip
    assert passed.status_code == 200, passed.text
    assert (passed.headers["x-edge-route"], passed.headers["x-edge-route-reason"]) == ("cloud", "not_installed")
    assert passed.json()["model"] == CLOUD_MODEL
    assert passed.json()["choices"][0]["message"]["content"] == expected  # greedy: the upstream's own answer

    # streaming, through the official OpenAI client a device would use: SSE in, SSE out
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=DEVICE_KEY, max_retries=0, timeout=120)
    with client.chat.completions.with_streaming_response.create(model=CLOUD_MODEL, stream=True, **CHAT) as raw:
        assert raw.headers["x-edge-route"] == "cloud"
        assert raw.headers["content-type"].startswith("text/event-stream")
        pieces = [c.choices[0].delta.content or "" for c in raw.parse() if c.choices]
    assert len(pieces) > 2 and "".join(pieces) == expected

    # the upstream's refusals come back as they are (here: a prompt over its context)
    too_long = {**CHAT, "model": CLOUD_MODEL, "messages": [{"role": "user", "content": "word " * 5000}]}
    refused = httpx.post(f"{url}/v1/chat/completions", json=too_long, headers=auth(DEVICE_KEY), timeout=120)
    assert refused.status_code == 400 and refused.headers["x-edge-route"] == "cloud"
    assert "maximum context length is 4096" in refused.json()["error"]["message"]  # the upstream's words


def test_a_repeated_idempotency_key_is_answered_once_per_device(gateway):
    url = gateway["url"]
    body = {**CHAT, "model": CLOUD_MODEL}

    def deliver(key: str) -> httpx.Response:
        headers = {**auth(key), "Idempotency-Key": "job-0042"}
        return httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers, timeout=120)

    first, again, other = deliver(DEVICE_KEY), deliver(DEVICE_KEY), deliver(OTHER_KEY)
    assert first.status_code == again.status_code == other.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]  # the stored answer: the upstream did not run it again
    assert "idempotent-replayed" not in other.headers  # another device's key of the same name is its own
    assert other.json()["id"] != first.json()["id"]
    changed = httpx.post(f"{url}/v1/chat/completions", json={**body, "max_tokens": 3},
                         headers={**auth(DEVICE_KEY), "Idempotency-Key": "job-0042"})  # fmt: skip
    assert changed.status_code == 422 and "already used for a different request" in changed.text


def test_own_bundle_is_answered_locally(gateway, digits):
    url = gateway["url"]
    x = digits.test_x[:2]
    body = {"inputs": {"input": {"dtype": "float32", "shape": list(x.shape), "data": x.ravel().tolist()}}}
    infer = httpx.post(f"{url}/v1/infer/digits-cnn", json=body, headers=auth(DEVICE_KEY), timeout=60)
    assert infer.status_code == 200, infer.text
    assert infer.json()["outputs"]["output"]["shape"] == [2, 10]
    # an OpenAI request for a model the gateway has stays here, even when the upstream could take it
    chat = httpx.post(f"{url}/v1/chat/completions", json={**CHAT, "model": "digits-cnn"}, headers=auth(DEVICE_KEY))
    assert (chat.headers["x-edge-route"], chat.headers["x-edge-route-reason"]) == ("local", "default")
    assert chat.status_code == 400 and "tensor model" in chat.json()["error"]["message"]


def test_unreachable_upstream_is_a_clear_502(key_files, database_url, tmp_path):
    from gateway_helpers import gateway_config, running_gateway

    from edge_sdk.apps.daemon.pool import DirectorySource

    dead = f"http://127.0.0.1:{free_port()}"
    config = gateway_config(key_files, tmp_path / "registry", upstream_url=dead, database_url=database_url)
    with running_gateway(DirectorySource([]), config) as url:
        answer = httpx.post(f"{url}/v1/chat/completions", json={**CHAT, "model": "x"}, headers=auth(DEVICE_KEY))
    assert answer.status_code == 502
    assert answer.headers["x-edge-route"] == "cloud"
    assert f"the cloud at {dead}/v1/chat/completions did not answer after" in answer.json()["error"]["message"]
