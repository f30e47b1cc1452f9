"""POST /v1/jobs and GET /v1/jobs/{id} on a real daemon, delivered to a real receiver on loopback."""

from __future__ import annotations

import time

import httpx
import pytest
from receiver_app import free_port, make_app, serving

from edge_sdk.apps.daemon.store_source import StoreSource

CHAT = {"model": "smollm2", "messages": [{"role": "user", "content": "Summarise this later."}], "max_tokens": 8}


@pytest.fixture
def offline_daemon(serve_bundles, tmp_path):
    """A daemon with a queue whose cloud is down (nothing listens on its port)."""
    cloud = f"http://127.0.0.1:{free_port()}"
    options = dict(queue_path=tmp_path / "q.sqlite", cloud_url=cloud, queue_max_items=3, delivery_max_backoff_s=0.2)
    with serve_bundles(StoreSource(tmp_path / "store"), **options, telemetry_interval_s=0) as url:
        yield url


def job(url: str, body=CHAT, endpoint="/v1/chat/completions", **extra) -> httpx.Response:
    return httpx.post(f"{url}/v1/jobs", json={"endpoint": endpoint, "body": body, **extra}, timeout=10)


def test_a_job_is_acknowledged_queued_and_retried_while_the_cloud_is_down(offline_daemon):
    reply = job(offline_daemon)
    assert reply.status_code == 202
    created = reply.json()
    assert created["state"] == "queued" and created["id"].startswith("job_") and created["result"] is None
    assert reply.headers["location"] == f"/v1/jobs/{created['id']}"
    deadline = time.monotonic() + 10
    while (state := httpx.get(f"{offline_daemon}/v1/jobs/{created['id']}").json())["attempts"] < 2:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert state["state"] in ("queued", "delivering") and "cloud unreachable" in state["error"]


def test_the_same_idempotency_key_returns_the_same_job(offline_daemon):
    first = job(offline_daemon, idempotency_key="order-17")
    second = job(offline_daemon, idempotency_key="order-17")
    by_header = httpx.post(
        f"{offline_daemon}/v1/jobs",
        json={"endpoint": "/v1/chat/completions", "body": CHAT},
        headers={"Idempotency-Key": "order-17"},
    )
    assert first.status_code == 202 and second.status_code == by_header.status_code == 200
    assert first.json()["id"] == second.json()["id"] == by_header.json()["id"]
    reused = job(offline_daemon, body={**CHAT, "max_tokens": 9}, idempotency_key="order-17")
    assert reused.status_code == 422 and "different request" in reused.text
    # A key the cloud would refuse is refused now, not after the job waited in the queue.
    long_key = httpx.post(
        f"{offline_daemon}/v1/jobs",
        json={"endpoint": "/v1/chat/completions", "body": CHAT},
        headers={"Idempotency-Key": "k" * 256},
    )
    assert long_key.status_code == 400 and "1 to 255 characters" in long_key.json()["error"]["message"]


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", None])
def test_a_json_body_sent_as_curl_d_sends_it_is_a_job(offline_daemon, content_type):
    """`curl -d '{...}'` says application/x-www-form-urlencoded; other clients send no Content-Type."""
    import json

    body = json.dumps({"endpoint": "/v1/chat/completions", "body": CHAT}).encode()
    with httpx.Client() as client:
        request = client.build_request("POST", f"{offline_daemon}/v1/jobs", content=body)
        if content_type is None:
            request.headers.pop("content-type", None)
        else:
            request.headers["content-type"] = content_type
        reply = client.send(request)
    assert reply.status_code == 202, reply.text
    assert reply.json()["state"] == "queued"


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"endpoint": "/v1/infer/x", "body": CHAT}, "'/v1/infer/x' cannot be queued as a job; valid: '/v1/chat"),
        ({"endpoint": "/v1/chat/completions", "body": {**CHAT, "stream": True}}, "a job cannot stream"),
        ({"endpoint": "/v1/chat/completions", "body": {"model": "m"}}, "not a valid /v1/chat/completions request"),
        ({"endpoint": "/v1/completions", "body": {"model": "m", "prompt": "x" * 2_000_000}}, "over the limit"),
        ({"endpoint": "/v1/completions", "body": CHAT, "priority": 1}, "priority: Extra inputs"),
        ({"body": CHAT}, "endpoint: Field required"),
    ],
)
def test_bad_jobs_get_400_naming_the_problem(offline_daemon, payload, message):
    reply = httpx.post(f"{offline_daemon}/v1/jobs", json=payload, timeout=10)
    assert reply.status_code == 400, reply.text
    assert message in reply.json()["error"]["message"]


def test_a_model_the_privacy_policy_keeps_here_is_never_queued_for_the_cloud(serve_bundles, tmp_path):
    cloud = f"http://127.0.0.1:{free_port()}"
    options = dict(queue_path=tmp_path / "q.sqlite", cloud_url=cloud, local_only_models=frozenset({"smollm2"}))
    with serve_bundles(StoreSource(tmp_path / "store"), **options, telemetry_interval_s=0) as url:
        refused = job(url)
        assert refused.status_code == 403, refused.text
        assert "privacy policy keeps 'smollm2' on this device" in refused.json()["error"]["message"]
        assert job(url, body={**CHAT, "model": "elsewhere"}).status_code == 202


def test_a_full_queue_refuses_new_jobs_with_507_naming_the_cap(offline_daemon):
    for i in range(3):
        assert job(offline_daemon, body={**CHAT, "seed": i}).status_code == 202
    full = job(offline_daemon, body={**CHAT, "seed": 99})
    assert full.status_code == 507 and "cap 3" in full.json()["error"]["message"]
    assert "retry-after" in full.headers
    assert httpx.get(f"{offline_daemon}/health/ready").status_code == 200  # and it keeps serving


def test_unknown_job_is_404(offline_daemon):
    reply = httpx.get(f"{offline_daemon}/v1/jobs/job_nope")
    assert reply.status_code == 404 and "'job_nope'" in reply.text


def test_without_a_queue_or_a_cloud_jobs_get_503(serve_bundles, tmp_path):
    store = StoreSource(tmp_path / "store")
    with serve_bundles(store, cloud_url="http://127.0.0.1:9") as url:
        no_queue = job(url)
    with serve_bundles(store, queue_path=tmp_path / "q.sqlite") as url:
        no_cloud = job(url)
    assert no_queue.status_code == 503 and "--queue-path" in no_queue.text
    assert no_cloud.status_code == 503 and "--cloud-url" in no_cloud.text


def _batches(cloud: str) -> list[dict]:
    return httpx.get(f"{cloud}/telemetry").json()


def test_jobs_and_telemetry_reach_the_cloud_and_results_come_back(serve_bundles, tmp_path):
    receiver = make_app(tmp_path / "idem.sqlite")
    with serving(receiver) as cloud:
        options = dict(queue_path=tmp_path / "q.sqlite", cloud_url=cloud, telemetry_interval_s=0.3, device_id="pi-7")
        with serve_bundles(StoreSource(tmp_path / "store"), **options) as url:
            created = job(url, idempotency_key="k-1").json()
            deadline = time.monotonic() + 10
            while (state := httpx.get(f"{url}/v1/jobs/{created['id']}").json())["state"] != "done":
                assert time.monotonic() < deadline, state
                time.sleep(0.05)
            # a snapshot taken after the job was queued (under load the first one may come before it)
            while not any("edge_jobs_total" in i["counters"] for b in _batches(cloud) for i in b["items"]):
                assert time.monotonic() < deadline
                time.sleep(0.05)
            metrics = httpx.get(f"{url}/metrics").text
        telemetry = httpx.get(f"{cloud}/telemetry").json()
    assert state["result"] == {"object": "chat.completion", "key": "k-1", "model": "smollm2", "n": 1}
    assert state["attempts"] == 1 and state["status_code"] == 200 and state["error"] is None
    first = next(b for b in telemetry if "edge_jobs_total" in b["items"][0]["counters"])
    assert first["device"] == "pi-7" and len(first["items"]) == 1
    snapshot = first["items"][0]
    assert {"at", "models", "counters", "queue"} <= set(snapshot)
    jobs_counter = snapshot["counters"]["edge_jobs_total"]
    assert {"labels": {"outcome": "queued"}, "value": 1.0} in jobs_counter
    assert 'edge_queue_deliveries_total{kind="job",outcome="done"} 1' in metrics
    assert 'edge_offline_queue_items{state="done"}' in metrics
    receiver.state.store.close()


def test_serve_names_a_bad_telemetry_policy_and_the_valid_ones(tmp_path):
    import re

    from typer.testing import CliRunner

    from edge_sdk.apps.cli.main import app

    result = CliRunner().invoke(app, ["serve", "--store", str(tmp_path), "--telemetry-policy", "keep-all"])
    assert result.exit_code == 2
    message = re.sub(r"[\s│]+", " ", result.output)
    assert "'keep-all' is not one of" in message and "'reject-new'" in message and "'drop-oldest'" in message


def test_the_queue_lives_beside_the_store_by_default(tmp_path):
    from edge_sdk.apps.cli.serve_cmds import queue_options

    assert queue_options(tmp_path, None, False)["queue_path"] == tmp_path / "queue.sqlite"
    assert queue_options(None, None, False)["queue_path"].parts[-3:] == ("state", "edge-sdk", "queue.sqlite")
    assert queue_options(tmp_path, None, True)["queue_path"] is None


def test_telemetry_reaches_the_project_gateway(serve_bundles, tmp_path):
    from gateway_helpers import DEVICE_KEY, auth, serve_app

    from edge_sdk.apps.gateway.app import GatewayConfig, build_gateway

    gateway = build_gateway(
        StoreSource(tmp_path / "cloud"),
        GatewayConfig(devices={DEVICE_KEY: "pi-kitchen"}, registry_dir=tmp_path / "registry"),
    )
    with serve_app(gateway) as cloud:
        options = dict(queue_path=tmp_path / "q.sqlite", cloud_url=cloud, cloud_api_key=DEVICE_KEY)
        with serve_bundles(StoreSource(tmp_path / "store"), **options, telemetry_interval_s=0.2) as url:
            deadline = time.monotonic() + 10
            while httpx.get(f"{cloud}/v1/telemetry", headers=auth(DEVICE_KEY)).json()["items"] < 2:
                assert time.monotonic() < deadline, httpx.get(f"{url}/metrics").text
                time.sleep(0.05)
            metrics = httpx.get(f"{url}/metrics").text
    gateway.state.pool.close()
    assert 'edge_queue_deliveries_total{kind="telemetry",outcome="done"}' in metrics
    assert 'outcome="failed"' not in metrics  # the gateway accepted every snapshot (device named by its key)


def test_jobs_are_listed_newest_first_filtered_by_state_and_paged(offline_daemon):
    ids = [job(offline_daemon, body={**CHAT, "max_tokens": n}).json()["id"] for n in (1, 2, 3)]
    first = httpx.get(f"{offline_daemon}/v1/jobs", params={"limit": 2})
    assert first.status_code == 200, first.text
    page = first.json()
    assert page["object"] == "list" and page["has_more"] is True
    assert [j["id"] for j in page["data"]] == ids[:0:-1]  # newest first
    assert (page["first_id"], page["last_id"]) == (ids[2], ids[1])
    rest = httpx.get(f"{offline_daemon}/v1/jobs", params={"limit": 2, "after": page["last_id"]}).json()
    assert [j["id"] for j in rest["data"]] == [ids[0]] and rest["has_more"] is False
    pending = httpx.get(f"{offline_daemon}/v1/jobs?state=queued,delivering").json()["data"]
    assert sorted(j["id"] for j in pending) == sorted(ids)  # the cloud is down: all still pending
    assert httpx.get(f"{offline_daemon}/v1/jobs", params={"state": "done"}).json()["data"] == []
    for query, message in [
        ({"state": "finished"}, "state 'finished' is not one of: 'delivering', 'done'"),
        ({"limit": 0}, "limit must be an integer from 1 to 100"),
        ({"limit": "many"}, "limit must be an integer from 1 to 100"),
        ({"after": "job_nope"}, "after='job_nope' is not a job id of this device"),
    ]:
        bad = httpx.get(f"{offline_daemon}/v1/jobs", params=query)
        assert bad.status_code == 400 and message in bad.json()["error"]["message"], bad.text
