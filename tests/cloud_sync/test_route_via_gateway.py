"""A device daemon whose cloud is the project's own gateway (`edge-sdk cloud serve`): the gateway answers from its
own SmolLM2 with a longer context, or passes on to llama.cpp's server for a model it does not have."""

from __future__ import annotations

import httpx
import pytest
from gateway_helpers import DEVICE_KEY, free_port, gateway_config, running_gateway, serve_app

from edge_sdk.apps.daemon.config import DaemonConfig
from edge_sdk.apps.daemon.pool import DirectorySource
from edge_sdk.apps.daemon.server import build

pytestmark = pytest.mark.slow

CHAT = {
    "model": "smollm2",
    "messages": [{"role": "user", "content": "What is the capital of France? Answer in one word."}],
    "max_tokens": 12,
    "temperature": 0,
}


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    from converters.gguf.zoo import smollm2_as_shipped

    return smollm2_as_shipped(tmp_path_factory.mktemp("smollm2") / "b")


@pytest.fixture(scope="module")
def gateway(smollm2, key_files, llama_server, tmp_path_factory):
    config = gateway_config(
        key_files,
        tmp_path_factory.mktemp("registry"),
        upstream_url=llama_server,
        daemon=DaemonConfig(context=4096),
    )
    with running_gateway(DirectorySource([smollm2.root]), config) as url:
        yield url


def device(smollm2, cloud_url: str, key: str):
    config = DaemonConfig(port=free_port(), cloud_url=cloud_url, cloud_api_key=key, cloud_retries=0)
    app = build(DirectorySource([smollm2.root]), config)
    return app, serve_app(app, config.port)


def route_of(r: httpx.Response) -> tuple[str, str]:
    return r.headers["x-edge-route"], r.headers["x-edge-route-reason"]


def test_the_gateway_answers_what_the_device_cannot(smollm2, gateway):
    app, server = device(smollm2, gateway, DEVICE_KEY)
    try:
        with server as url:
            r = httpx.post(f"{url}/v1/chat/completions", json=CHAT, timeout=120)
            assert r.status_code == 200 and route_of(r) == ("local", "default")
            # Too long for the device's 2,048 tokens; the gateway's own SmolLM2 holds 4,096.
            long = {"model": "smollm2", "prompt": "Name a colour. Answer:", "max_tokens": 2045, "temperature": 0,
                    "stop": [".", "\n"]}  # fmt: skip
            r = httpx.post(f"{url}/v1/completions", json=long, timeout=120)
            assert r.status_code == 200 and route_of(r) == ("cloud", "context")
            assert r.json()["object"] == "text_completion"
            assert _metric(gateway, 'edge_route_total{reason="default",route="local"}') == 1  # its own SmolLM2
            # A model the gateway does not have either: it passes it on to llama.cpp's server.
            r = httpx.post(f"{url}/v1/chat/completions", json={**CHAT, "model": "smollm2-large"}, timeout=120)
            assert r.status_code == 200 and route_of(r) == ("cloud", "not_installed")
            assert "Paris" in r.json()["choices"][0]["message"]["content"]
            assert _metric(gateway, 'edge_route_total{reason="default",route="local"}') == 1  # not its own
    finally:
        app.state.pool.close()


def test_a_device_key_the_gateway_refuses_comes_back_in_the_openai_shape(smollm2, gateway):
    app, server = device(smollm2, gateway, "not-a-device-key")
    try:
        with server as url:
            r = httpx.post(f"{url}/v1/chat/completions", json={**CHAT, "model": "elsewhere"}, timeout=60)
    finally:
        app.state.pool.close()
    assert r.status_code == 401 and route_of(r) == ("cloud", "not_installed")
    assert r.json()["error"]["message"]


def _metric(url: str, series: str) -> float:
    text = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {DEVICE_KEY}"}).text
    return next((float(line.split()[-1]) for line in text.splitlines() if line.startswith(series + " ")), 0.0)
