"""The gateway's fleet page at `/`, opened in a real headless browser: a real device daemon sends its telemetry to
the gateway, and the page shows it (host, version, model and variant, route reasons), the device that never
reported, and the registry; a publisher key opens it, a device key or a wrong key does not."""

from __future__ import annotations

import socket
import time

import httpx
import pytest
from gateway_helpers import (
    DEVICE_KEY,
    PUBLISHER_KEY,
    auth,
    free_port,
    gateway_config,
    publish,
    running_gateway,
    serve_app,
)
from headless import fetches_nothing, section_rows, text_of

from edge_sdk.apps.daemon.config import DaemonConfig
from edge_sdk.apps.daemon.pool import DirectorySource
from edge_sdk.apps.daemon.server import build
from edge_sdk.apps.gateway.app import GatewayConfig
from edge_sdk.version import __version__

TENSOR = {"dtype": "float32", "shape": [1, 1, 8, 8], "data": [0.0] * 64}
ELSEWHERE = {"model": "not-on-this-device", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


slow = pytest.mark.slow  # a gateway, a device daemon and chromium


@pytest.fixture(scope="module")
def fleet(key_files, packed_versions, onnx_bundle, module_database_url, tmp_path_factory):
    """The gateway (state in SQLite, then PostgreSQL) with two versions published and one device (pi-kitchen)
    that served a tensor request and sent two chat requests for a model it does not have to the gateway, and
    reported it by telemetry."""
    work = tmp_path_factory.mktemp("fleet")
    config = gateway_config(key_files, work / "registry", database_url=module_database_url)
    with running_gateway(DirectorySource([]), config) as gateway:
        for version in ("1.0.0", "1.1.0"):
            assert publish(gateway, packed_versions[version]).status_code == 201
        config = DaemonConfig(
            port=free_port(), cloud_url=gateway, cloud_api_key=DEVICE_KEY, cloud_retries=0,
            queue_path=work / "queue.sqlite", telemetry_interval_s=0.2,
        )  # fmt: skip
        device = build(DirectorySource([onnx_bundle.root]), config)
        try:
            with serve_app(device, config.port) as url:
                assert httpx.post(f"{url}/v1/infer/digits-cnn", json={"inputs": {"input": TENSOR}}).status_code == 200
                for _ in range(2):
                    r = httpx.post(f"{url}/v1/chat/completions", json=ELSEWHERE, timeout=60)
                    assert r.headers["x-edge-route"] == "cloud" and r.headers["x-edge-route-reason"] == "not_installed"
                variant = httpx.get(f"{url}/v1/models/digits-cnn").json()["variant"]
                deadline = time.monotonic() + 60
                while "not_installed" not in httpx.get(gateway, headers=auth(PUBLISHER_KEY)).text:
                    assert time.monotonic() < deadline, "no telemetry snapshot after the requests reached the gateway"
                    time.sleep(0.2)
                yield gateway, variant
        finally:
            device.state.pool.close()


@slow
def test_the_fleet_page_shows_devices_routes_and_the_registry(fleet, browser, tmp_path):
    gateway, variant = fleet
    dom = browser.dom(f"{gateway}/?key={PUBLISHER_KEY}", screenshot=tmp_path / "fleet.png")
    assert text_of(dom).startswith("edge-sdk fleet") and fetches_nothing(dom)
    devices = {row[0]: row for row in section_rows(dom, "devices")}
    assert set(devices) == {"pi-kitchen", "jetson-garage"}
    _id, host, seen, snapshots, sdk, models, routed, queued = devices["pi-kitchen"]
    assert (host, sdk, models, routed) == (socket.gethostname(), __version__, f"digits-cnn 1.0.0 ({variant})", "2")
    assert seen.endswith("s ago") and int(snapshots) >= 1 and queued.isdigit()  # telemetry still queued: any
    assert "never reported" in devices["jetson-garage"][2]
    routes = section_rows(dom, "routes")
    assert [r[:4] for r in routes] == [["cloud", "not_installed", "2", "1"]]
    assert section_rows(dom, "versions") == [["digits-cnn", "1.0.0", "1", "pi-kitchen"]]
    registry = [(r[0], r[1], r[3]) for r in section_rows(dom, "registry")]
    assert registry == [("digits-cnn", "1.0.0", "unsigned"), ("digits-cnn", "1.1.0", "unsigned")]


@slow
def test_a_device_key_or_a_wrong_key_cannot_open_the_fleet_page(fleet, browser):
    gateway, _ = fleet
    text = text_of(browser.dom(f"{gateway}/?key={DEVICE_KEY}"))
    assert "a device key cannot open the fleet page" in text and "pi-kitchen" not in text
    assert httpx.get(gateway, params={"key": DEVICE_KEY}).status_code == 403
    assert httpx.get(gateway, params={"key": "wrong-key-0123456789"}).status_code == 401
    assert httpx.get(gateway, headers=auth(DEVICE_KEY)).status_code == 401
    assert httpx.get(gateway, headers=auth(PUBLISHER_KEY)).status_code == 200


def test_what_a_device_sends_is_shown_as_text_never_as_markup(key_files, database_url, tmp_path):
    """Telemetry is any JSON a device sends: markup in it is escaped, odd shapes are skipped, the page still opens."""
    config = gateway_config(key_files, tmp_path / "registry", database_url=database_url)
    with running_gateway(DirectorySource([]), config) as gateway:
        hostile = {
            "host": "<script>alert('host')</script>",
            "sdk": ["not", "a", "version"],
            "models": {"<img src=x onerror=alert(1)>": "1.0.0", "fine": None},
            "counters": {"edge_route_total": [{"labels": {"route": "<b>cloud</b>", "reason": "slo"}, "value": "many"},
                                              {"labels": "nope"}, 7]},
            "queue": ["queued"],
        }  # fmt: skip
        sent = httpx.post(f"{gateway}/v1/telemetry", json={"items": [hostile]}, headers=auth(DEVICE_KEY))
        assert sent.status_code == 202
        page = httpx.get(gateway, headers=auth(PUBLISHER_KEY))
    assert page.status_code == 200
    assert "<script>alert" not in page.text and "<img src=x" not in page.text and "<b>cloud" not in page.text
    assert "&lt;script&gt;alert(&#x27;host&#x27;)&lt;/script&gt;" in page.text
    assert "&lt;img src=x onerror=alert(1)&gt;" in page.text


def test_a_gateway_without_publisher_keys_says_who_could_open_the_page(key_files, tmp_path):
    config = GatewayConfig(devices={DEVICE_KEY: "pi-kitchen"}, registry_dir=tmp_path / "registry")
    with running_gateway(DirectorySource([]), config) as gateway:
        page = httpx.get(gateway, params={"key": DEVICE_KEY})
    assert page.status_code == 403 and "start it with --publisher-keys FILE" in page.text
