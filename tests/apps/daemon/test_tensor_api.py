"""The daemon serving the digits CNN over HTTP: results, metrics, and every bad input answered cleanly."""

from __future__ import annotations

import concurrent.futures

import httpx
import numpy as np
import pytest


def _tensor(x: np.ndarray) -> dict:
    return {"dtype": str(x.dtype), "shape": list(x.shape), "data": x.reshape(-1).tolist()}


def test_infer_matches_the_session_in_process(tensor_daemon, onnx_bundle, digits):
    import edge_sdk

    x = digits.test_x[:5]
    r = httpx.post(f"{tensor_daemon}/v1/infer/digits-cnn", json={"inputs": {"input": _tensor(x)}})
    assert r.status_code == 200, r.text
    out = r.json()["outputs"]["output"]
    assert out["shape"] == [5, 10] and out["dtype"] == "float32"
    with edge_sdk.load(onnx_bundle, r.json()["variant"]) as session:  # the variant chosen for this host
        expected = session.run({"input": x})["output"]
    np.testing.assert_allclose(np.array(out["data"]).reshape(5, 10), expected, rtol=1e-5, atol=1e-5)
    assert np.array(out["data"]).reshape(5, 10).argmax(1).tolist() == digits.test_y[:5].tolist()


def test_models_health_and_metrics(tensor_daemon):
    models = httpx.get(f"{tensor_daemon}/v1/models").json()
    assert [m["id"] for m in models["data"]] == ["digits-cnn"]
    assert httpx.get(f"{tensor_daemon}/health/ready").json()["ready"] is True
    httpx.post(
        f"{tensor_daemon}/v1/infer/digits-cnn", json={"inputs": {"input": _tensor(np.zeros((1, 1, 8, 8), np.float32))}}
    )
    text = httpx.get(f"{tensor_daemon}/metrics").text
    assert 'edge_requests_total{route="infer",status="200"}' in text
    assert "edge_request_seconds_bucket" in text and "edge_process_resident_bytes" in text


@pytest.mark.parametrize(
    ("path", "body", "status", "needle"),
    [
        ("/v1/infer/nope", {"inputs": {}}, 404, "not installed here; installed: 'digits-cnn'"),
        (
            "/v1/infer/digits-cnn",
            {"inputs": {"input": _tensor(np.zeros((2, 64), np.float32))}},
            400,
            "expected input: float32[batchx1x8x8]",
        ),
        ("/v1/infer/digits-cnn", {"inputs": {"input": _tensor(np.zeros((1, 1, 8, 8), np.int32))}}, 400, "dtype int32"),
        (
            "/v1/infer/digits-cnn",
            {"inputs": {"pixels": _tensor(np.zeros((1, 1, 8, 8), np.float32))}},
            400,
            "unknown input 'pixels'",
        ),
        (
            "/v1/infer/digits-cnn",
            {"inputs": {"input": {"dtype": "float32", "shape": [3], "data": [1]}}},
            400,
            "does not form",
        ),
        ("/v1/infer/digits-cnn", {"wrong": 1}, 400, "invalid request"),
        (
            "/v1/chat/completions",
            {"model": "digits-cnn", "messages": [{"role": "user", "content": "hi"}]},
            400,
            "tensor model",
        ),
    ],
    ids=["unknown-model", "shape", "dtype", "input-name", "data", "schema", "chat-on-tensor"],
)
def test_bad_requests_get_a_clear_error_and_the_daemon_keeps_serving(tensor_daemon, path, body, status, needle):
    r = httpx.post(f"{tensor_daemon}{path}", json=body)
    assert r.status_code == status, r.text
    assert needle in r.json()["error"]["message"]
    ok = httpx.post(
        f"{tensor_daemon}/v1/infer/digits-cnn", json={"inputs": {"input": _tensor(np.zeros((1, 1, 8, 8), np.float32))}}
    )
    assert ok.status_code == 200


def test_malformed_json_and_oversized_body(tensor_daemon):
    r = httpx.post(
        f"{tensor_daemon}/v1/infer/digits-cnn", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400 and "invalid request" in r.json()["error"]["message"]
    big = b"x" * (300 * 1024)
    r = httpx.post(f"{tensor_daemon}/v1/infer/digits-cnn", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "larger than the limit" in r.json()["error"]["message"]

    def chunks():
        for _ in range(40):
            yield b"x" * 10_000

    r = httpx.post(
        f"{tensor_daemon}/v1/infer/digits-cnn", content=chunks(), headers={"content-type": "application/json"}
    )
    assert r.status_code == 413


def test_burst_beyond_concurrency_and_queue_gets_429_with_retry_after(slow_bundle, serve_bundles):
    from edge_sdk.apps.daemon.pool import DirectorySource

    x = _tensor(np.zeros((1, 1, 8, 8), np.float32))
    with serve_bundles(DirectorySource([slow_bundle.root]), concurrency_per_model=1, queue_per_model=1) as url:
        with httpx.Client(timeout=60) as client, concurrent.futures.ThreadPoolExecutor(10) as ex:
            responses = list(
                ex.map(lambda _: client.post(f"{url}/v1/infer/slow-net", json={"inputs": {"input": x}}), range(10))
            )
        codes = sorted(r.status_code for r in responses)
        assert 200 in codes and 429 in codes, codes
        refused = next(r for r in responses if r.status_code == 429)
        assert int(refused.headers["retry-after"]) >= 1
        assert "busy" in refused.json()["error"]["message"]
        # Once the burst is over, the model serves again.
        assert httpx.post(f"{url}/v1/infer/slow-net", json={"inputs": {"input": x}}, timeout=60).status_code == 200


def test_api_key_required_except_for_health(onnx_bundle, serve_bundles):
    from edge_sdk.apps.daemon.pool import DirectorySource

    with serve_bundles(DirectorySource([onnx_bundle.root]), api_keys=frozenset({"s3cret"})) as url:
        assert httpx.get(f"{url}/health/live").status_code == 200
        assert httpx.get(f"{url}/v1/models").status_code == 401
        assert httpx.get(f"{url}/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_serves_the_store_and_picks_up_a_new_version_without_a_restart(onnx_bundle, serve_bundles, tmp_path):
    import json
    import shutil

    from edge_sdk.apps.daemon.store_source import StoreSource
    from edge_sdk.store import BundleStore

    # Version 2.0.0 of the same model: the same files with a bumped manifest version.
    v2 = tmp_path / "v2"
    shutil.copytree(onnx_bundle.root, v2)
    manifest = json.loads((v2 / "manifest.json").read_text())
    manifest["version"] = "2.0.0"
    (v2 / "manifest.json").write_text(json.dumps(manifest))

    store = BundleStore(tmp_path / "store")
    store.install(onnx_bundle.root)
    x = {"inputs": {"input": _tensor(np.zeros((1, 1, 8, 8), np.float32))}}
    with serve_bundles(StoreSource(tmp_path / "store")) as url:
        assert httpx.post(f"{url}/v1/infer/digits-cnn", json=x).status_code == 200
        store.install(v2)
        assert httpx.post(f"{url}/v1/infer/digits-cnn", json=x).status_code == 200
        metrics = httpx.get(f"{url}/metrics").text
        assert metrics.count('edge_model_load_seconds_count{model="digits-cnn"}') == 1
        assert 'edge_model_load_seconds_count{model="digits-cnn"} 2' in metrics, "v2 was not loaded"
        store.rollback("digits-cnn")
        assert httpx.post(f"{url}/v1/infer/digits-cnn", json=x).status_code == 200
        assert 'edge_model_load_seconds_count{model="digits-cnn"} 3' in httpx.get(f"{url}/metrics").text


def test_sigterm_drains_in_flight_requests_then_exits(slow_bundle):
    import signal
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    daemon = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge_sdk.cli",
            "serve",
            str(slow_bundle.root),
            "--port",
            str(port),
            "--concurrency",
            "1",
            "--queue",
            "8",
            "--drain-timeout",
            "30",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{url}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        # A batch of 16 (~1 s of compute each): the requests are surely still in flight when SIGTERM comes.
        x = {"inputs": {"input": _tensor(np.zeros((16, 1, 8, 8), np.float32))}}
        with concurrent.futures.ThreadPoolExecutor(4) as ex:
            futures = [ex.submit(httpx.post, f"{url}/v1/infer/slow-net", json=x, timeout=60) for _ in range(4)]
            # All four arrived (one running, three queued): a request arriving after SIGTERM gets 503 instead.
            _wait_until_in_flight(url, "slow-net", at_least=4)
            daemon.send_signal(signal.SIGTERM)
            codes = [f.result().status_code for f in futures]
        assert codes == [200, 200, 200, 200]
        # uvicorn re-raises SIGTERM after a clean drain; systemd counts that as a clean stop.
        assert daemon.wait(timeout=30) in (0, -signal.SIGTERM)
    finally:
        if daemon.poll() is None:
            daemon.kill()


def _corrupt_but_consistent(bundle_root, dest):
    """A bundle whose digests match but whose model file is garbage: it passes verify, the engine chokes."""
    import hashlib
    import json
    import shutil

    shutil.copytree(bundle_root, dest)
    manifest = json.loads((dest / "manifest.json").read_text())
    manifest["name"] = "broken-net"
    for variant in manifest["variants"]:
        for entry in variant["files"]:
            garbage = b"\x08\x07" + b"\xff" * 300
            (dest / entry["path"]).write_bytes(garbage)
            entry["sha256"], entry["size"] = hashlib.sha256(garbage).hexdigest(), len(garbage)
    (dest / "manifest.json").write_text(json.dumps(manifest))
    return dest


def test_engine_failing_to_load_one_model_leaves_the_others_serving(onnx_bundle, serve_bundles, tmp_path):
    from edge_sdk.apps.daemon.pool import DirectorySource

    broken = _corrupt_but_consistent(onnx_bundle.root, tmp_path / "broken")
    x = {"inputs": {"input": _tensor(np.zeros((1, 1, 8, 8), np.float32))}}
    with serve_bundles(DirectorySource([onnx_bundle.root, broken])) as url:
        r = httpx.post(f"{url}/v1/infer/broken-net", json=x)
        assert r.status_code == 500 and "could not load" in r.json()["error"]["message"]
        assert httpx.post(f"{url}/v1/infer/digits-cnn", json=x).status_code == 200
        assert httpx.get(f"{url}/health/live").status_code == 200


def test_models_beyond_the_memory_budget_are_evicted_lru(onnx_bundle, slow_bundle, serve_bundles):
    from edge_sdk.apps.daemon.pool import DirectorySource

    x = {"inputs": {"input": _tensor(np.zeros((1, 1, 8, 8), np.float32))}}
    # Room for one engine and model at a time (each counts ~35 MB: the engine and its weights).
    with serve_bundles(DirectorySource([onnx_bundle.root, slow_bundle.root]), memory_budget_bytes=60 << 20) as url:
        for name in ("digits-cnn", "slow-net", "digits-cnn"):
            assert httpx.post(f"{url}/v1/infer/{name}", json=x, timeout=60).status_code == 200
            loaded = {m["id"] for m in httpx.get(f"{url}/v1/models").json()["data"] if m["loaded"]}
            assert loaded == {name}
        assert 'edge_model_evictions_total{model="digits-cnn"} 1' in httpx.get(f"{url}/metrics").text


def _wait_until_in_flight(url: str, model: str, at_least: int) -> None:
    """Poll /metrics until `at_least` requests are running or queued (never a fixed sleep on a busy machine)."""
    import time

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        total = 0.0
        for line in httpx.get(f"{url}/metrics", timeout=5).text.splitlines():
            if line.startswith(("edge_queue_depth{", "edge_requests_running{")) and f'model="{model}"' in line:
                total += float(line.split()[-1])
        if total >= at_least:
            return
        time.sleep(0.02)
    raise AssertionError(f"requests never reached {model!r}")
