"""The receiving side: a repeated Idempotency-Key is answered from the store and never executes twice.

Every test runs with the store in a SQLite file and in a fresh PostgreSQL database (`database_url`)."""

from __future__ import annotations

import concurrent.futures
import json
import socket
import time
from urllib.parse import urlparse

import httpx
import pytest
from receiver_app import make_app, serving

CHAT = "/v1/chat/completions"
BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def idem_db(database_url, tmp_path) -> str:
    """Where the receiver keeps its responses: a SQLite file, or a PostgreSQL database."""
    return database_url or str(tmp_path / "idem.sqlite")


@pytest.fixture
def receiver(idem_db):
    app = make_app(idem_db, delay_s=0.2, wait_s=5.0)
    with serving(app) as url:
        yield url
    app.state.store.close()


def post(url: str, key: str | None, body=BODY, bearer: str = "device-a") -> httpx.Response:
    headers = {"Authorization": f"Bearer {bearer}"} | ({"Idempotency-Key": key} if key else {})
    return httpx.post(f"{url}{CHAT}", json=body, headers=headers, timeout=30)


def executions(url: str) -> dict[str, int]:
    return httpx.get(f"{url}/executions").json()


def test_a_repeat_gets_the_stored_response_without_executing(receiver):
    first, second = post(receiver, "k1"), post(receiver, "k1")
    assert first.status_code == second.status_code == 200
    assert second.json() == first.json() == {"object": "chat.completion", "key": "k1", "model": "m", "n": 1}
    assert "idempotent-replayed" not in first.headers and second.headers["idempotent-replayed"] == "true"
    assert second.headers["content-type"] == "application/json"
    assert executions(receiver) == {"k1": 1}


def test_concurrent_requests_with_one_key_execute_once(receiver):
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(lambda _: post(receiver, "together"), range(4)))
    assert [r.status_code for r in replies] == [200] * 4
    assert len({r.text for r in replies}) == 1
    assert sum(r.headers.get("idempotent-replayed") == "true" for r in replies) == 3
    assert executions(receiver) == {"together": 1}


def test_a_waiter_past_its_patience_gets_409_in_progress(idem_db):
    app = make_app(idem_db, delay_s=1.5, wait_s=0.2)
    with serving(app) as url, concurrent.futures.ThreadPoolExecutor(2) as pool:
        slow = pool.submit(post, url, "slow")
        time.sleep(0.5)
        waiting = post(url, "slow")
        assert waiting.status_code == 409 and waiting.headers["retry-after"] == "1"
        assert waiting.json()["error"]["code"] == "idempotency_in_progress"
        assert slow.result().status_code == 200
        assert post(url, "slow").headers["idempotent-replayed"] == "true"
        assert executions(url) == {"slow": 1}
    app.state.store.close()


def test_a_request_running_longer_than_the_lease_is_not_taken_over(idem_db):
    # The lease is for a receiver that died; a live one that is merely slow keeps its claim.
    app = make_app(idem_db, delay_s=1.5, wait_s=0.3, lease_s=0.5)
    with serving(app) as url, concurrent.futures.ThreadPoolExecutor(2) as pool:
        slow = pool.submit(post, url, "long")
        time.sleep(0.9)  # past the lease, well before the end
        assert post(url, "long").status_code == 409
        assert slow.result().status_code == 200
        assert executions(url) == {"long": 1}
    app.state.store.close()


def test_the_same_key_for_a_different_body_is_422(receiver):
    assert post(receiver, "k2").status_code == 200
    reused = post(receiver, "k2", body={**BODY, "model": "other"})
    assert reused.status_code == 422 and "already used for a different request" in reused.text
    assert executions(receiver) == {"k2": 1}


def test_keys_are_per_device(receiver):
    assert post(receiver, "shared", bearer="device-a").json()["n"] == 1
    assert post(receiver, "shared", bearer="device-b").json()["n"] == 2  # another device's key: executes
    assert post(receiver, "shared", bearer="device-a").headers["idempotent-replayed"] == "true"


def test_client_errors_are_stored_but_unavailable_is_retried(receiver):
    bad = {**BODY, "fail": "bad-request"}
    assert post(receiver, "bad", body=bad).status_code == 400
    assert post(receiver, "bad", body=bad).headers["idempotent-replayed"] == "true"
    busy = {**BODY, "fail": "unavailable"}
    assert post(receiver, "busy", body=busy).status_code == 503  # not stored: "try again"
    retried = post(receiver, "busy", body=busy)
    assert retried.status_code == 200 and "idempotent-replayed" not in retried.headers
    assert executions(receiver) == {"bad": 1, "busy": 2}


def test_without_the_header_every_request_executes(receiver):
    post(receiver, None)
    post(receiver, None)
    assert executions(receiver) == {"": 2}


def test_an_overlong_key_is_refused_with_the_limit(receiver):
    reply = post(receiver, "x" * 300)
    assert reply.status_code == 400 and "1 to 255 characters, got 300" in reply.text


def test_stored_responses_survive_a_receiver_restart(idem_db):
    first = make_app(idem_db)
    with serving(first) as url:
        answer = post(url, "durable").json()
    first.state.store.close()
    second = make_app(idem_db)
    with serving(second) as url:
        again = post(url, "durable")
        assert again.json() == answer and again.headers["idempotent-replayed"] == "true"
        assert executions(url) == {}  # the new process never executed it
    second.state.store.close()


def test_a_request_cut_off_mid_body_never_executes(receiver):
    body = json.dumps(BODY).encode()
    address = urlparse(receiver)
    with socket.create_connection((address.hostname, address.port)) as raw:
        head = (
            f"POST {CHAT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Idempotency-Key: cut\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        raw.sendall(head.encode() + body[:10])  # the device dies here
    time.sleep(0.3)
    assert executions(receiver) == {}
    assert post(receiver, "cut").status_code == 200  # the retry executes, once
    assert executions(receiver) == {"cut": 1}


def test_on_the_project_gateway_a_repeat_is_replayed_per_device(database_url, tmp_path):
    from gateway_helpers import DEVICE_KEY, OTHER_KEY, auth, serve_app

    from edge_sdk.apps.daemon.pool import DirectorySource
    from edge_sdk.apps.gateway.app import GatewayConfig, build_gateway

    devices = {DEVICE_KEY: "pi-kitchen", OTHER_KEY: "jetson-garage"}
    config = GatewayConfig(devices=devices, registry_dir=tmp_path / "registry", database_url=database_url)
    gateway = build_gateway(DirectorySource([]), config)  # its own middleware, keyed on the authenticated device
    batch = {"items": [{"requests": 3}]}
    with serve_app(gateway) as cloud:

        def send(key: str) -> httpx.Response:
            return httpx.post(f"{cloud}/v1/telemetry", json=batch, headers=auth(key) | {"Idempotency-Key": "t-1"})

        first, again, other = send(DEVICE_KEY), send(DEVICE_KEY), send(OTHER_KEY)
        assert first.status_code == again.status_code == other.status_code == 202
        assert again.headers["idempotent-replayed"] == "true" and again.json() == first.json()
        assert "idempotent-replayed" not in other.headers and other.json()["device"] == "jetson-garage"
        assert send("not-a-device-key").status_code == 401
        assert send("not-a-device-key").headers.get("idempotent-replayed") is None  # a refusal is not stored
        assert httpx.get(f"{cloud}/v1/telemetry", headers=auth(DEVICE_KEY)).json()["items"] == 1  # stored once
    gateway.state.pool.close()
