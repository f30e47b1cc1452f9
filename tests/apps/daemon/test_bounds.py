"""Every resource a client can hold has a bound, and bad input gets a clean refusal; the daemon keeps serving.

Real servers on loopback: the in-process uvicorn of conftest.py for what the app decides, a real
`edge-sdk serve` process for what uvicorn and signals decide (header timeout, connection cap, drain).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from edge_sdk.apps.daemon.pool import DirectorySource


def _tensor(x: np.ndarray) -> dict:
    return {"dtype": str(x.dtype), "shape": list(x.shape), "data": x.reshape(-1).tolist()}


def _post_raw(url: str, path: str, raw: str) -> httpx.Response:
    return httpx.post(f"{url}{path}", content=raw, headers={"content-type": "application/json"}, timeout=60)


def _metric(url: str, name: str, **labels: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{{want}}}") or (not labels and line.startswith(f"{name} ")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


# ------------------------------------------------------------------------------------ tensor inputs
@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_tensor_inputs_get_422_unless_allowed(onnx_bundle, serve_bundles, literal):
    values = ["0.5"] * 64
    values[7] = literal
    data = ", ".join(values)
    raw = '{"inputs": {"input": {"dtype": "float32", "shape": [1, 1, 8, 8], "data": [' + data + "]}}}"
    with serve_bundles(DirectorySource([onnx_bundle.root])) as url:
        refused = _post_raw(url, "/v1/infer/digits-cnn", raw)
        assert refused.status_code == 422, refused.text
        error = refused.json()["error"]
        assert (
            "input 'input' holds 1 NaN or infinite value" in error["message"]
            and "--allow-nonfinite" in error["message"]
        )
        finite = raw.replace(literal, "0.5")
        assert _post_raw(url, "/v1/infer/digits-cnn", finite).status_code == 200  # still serving
    with serve_bundles(DirectorySource([onnx_bundle.root]), allow_nonfinite=True) as url:
        assert _post_raw(url, "/v1/infer/digits-cnn", raw).status_code == 200


def test_values_that_overflow_their_dtype_get_400(onnx_bundle, serve_bundles):
    raw = '{"inputs": {"input": {"dtype": "int64", "shape": [1], "data": [' + "9" * 30 + "]}}}"
    with serve_bundles(DirectorySource([onnx_bundle.root])) as url:
        refused = _post_raw(url, "/v1/infer/digits-cnn", raw)
        assert refused.status_code == 400, refused.text
        assert "does not form a int64 tensor" in refused.json()["error"]["message"]


# ------------------------------------------------------------------------------------ slow clients
def test_a_body_that_stops_arriving_gets_408_and_frees_the_request(onnx_bundle, serve_bundles):
    with serve_bundles(DirectorySource([onnx_bundle.root]), body_timeout_s=1.0) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(
                b"POST /v1/infer/digits-cnn HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b'Content-Length: 1000\r\n\r\n{"inputs": '
            )
            start = time.monotonic()
            answer = s.recv(4096)
            waited = time.monotonic() - start
            while b"}}" not in answer and (more := s.recv(4096)):
                answer += more
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"no request body data for 1 s" in answer
        assert 0.8 < waited < 8
        assert httpx.get(f"{url}/v1/models", timeout=10).status_code == 200


def test_requests_whose_client_left_while_queued_are_never_started(slow_bundle, serve_bundles):
    """One long request holds the only slot; four more queue and their clients hang up: none of them runs."""
    long_input = {"inputs": {"input": _tensor(np.zeros((16, 1, 8, 8), np.float32))}}
    short = json.dumps({"inputs": {"input": _tensor(np.zeros((1, 1, 8, 8), np.float32))}}).encode()
    with serve_bundles(DirectorySource([slow_bundle.root]), concurrency_per_model=1, queue_per_model=8) as url:
        port = int(url.rsplit(":", 1)[1])
        with concurrent.futures.ThreadPoolExecutor(1) as ex:
            running = ex.submit(httpx.post, f"{url}/v1/infer/slow-net", json=long_input, timeout=120)
            _wait_for(lambda: _metric(url, "edge_requests_running", model="slow-net") >= 1)
            gone = []
            for _ in range(4):
                s = socket.create_connection(("127.0.0.1", port), timeout=10)
                s.sendall(
                    b"POST /v1/infer/slow-net HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(short), short)
                )
                gone.append(s)
            _wait_for(lambda: _metric(url, "edge_queue_depth", model="slow-net") >= 4)
            for s in gone:
                s.close()  # the clients leave while their requests wait
            assert running.result().status_code == 200
        _wait_for(lambda: _metric(url, "edge_abandoned_total", model="slow-net") >= 4)
        assert _metric(url, "edge_abandoned_total", model="slow-net") == 4
        assert _post_raw(url, "/v1/infer/slow-net", short.decode()).status_code == 200


def _wait_for(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


# ------------------------------------------------------------------------------------ a real `edge-sdk serve`
@contextlib.contextmanager
def _serve_process(bundle: Path, *options: str) -> Iterator[tuple[subprocess.Popen, str]]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "edge_sdk.cli", "serve", str(bundle), "--port", str(port), *options]
    daemon = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{url}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield daemon, url
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait(timeout=10)


def _open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_slow_headers_are_cut_and_connections_are_capped(onnx_bundle):
    with _serve_process(onnx_bundle.root, "--header-timeout", "1", "--max-connections", "20") as (daemon, url):
        port = int(url.rsplit(":", 1)[1])
        baseline = _open_fds(daemon.pid)
        slow = []
        for _ in range(30):  # slowloris: headers that never end
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(b"POST /v1/infer/digits-cnn HTTP/1.1\r\nHost: x\r\n")
            slow.append(s)
        time.sleep(0.3)
        capped = httpx.get(f"{url}/v1/models", timeout=10)
        assert capped.status_code == 503  # uvicorn's limit_concurrency: answered at once, not queued
        for s in slow:  # each is closed by the daemon within the header timeout
            s.settimeout(10)
            assert s.recv(100) == b""
            s.close()
        _wait_for(lambda: _open_fds(daemon.pid) <= baseline + 2, timeout=10)
        assert httpx.get(f"{url}/v1/models", timeout=10).status_code == 200


def test_sigterm_drain_answers_new_requests_503_with_retry_after(slow_bundle):
    long_input = {"inputs": {"input": _tensor(np.zeros((16, 1, 8, 8), np.float32))}}
    options = ("--concurrency", "1", "--queue", "8", "--drain-timeout", "30")
    with _serve_process(slow_bundle.root, *options) as (daemon, url), concurrent.futures.ThreadPoolExecutor(2) as ex:
        in_flight = [ex.submit(httpx.post, f"{url}/v1/infer/slow-net", json=long_input, timeout=120) for _ in range(2)]
        # Both must have arrived (one running, one queued): one that arrives after SIGTERM is refused by design.
        _wait_for(
            lambda: (
                _metric(url, "edge_requests_running", model="slow-net") >= 1
                and _metric(url, "edge_queue_depth", model="slow-net") >= 1
            )
        )
        daemon.send_signal(signal.SIGTERM)
        _wait_for(lambda: httpx.get(f"{url}/health/ready", timeout=5).status_code == 503, timeout=10)
        refused = httpx.post(f"{url}/v1/infer/slow-net", json=long_input, timeout=10)
        assert refused.status_code == 503, refused.text
        assert int(refused.headers["retry-after"]) >= 1
        assert "shutting down" in refused.json()["error"]["message"]
        assert [f.result().status_code for f in in_flight] == [200, 200]  # nothing queued was dropped
        assert daemon.wait(timeout=30) in (0, -signal.SIGTERM)


def test_429_is_decided_when_the_request_arrives_before_its_body_is_read(slow_bundle, serve_bundles):
    """A full queue refuses a request from its headers: this one never sends its body, and still gets 429 at
    once (reading the body first would have waited out the body timeout)."""
    long_input = {"inputs": {"input": _tensor(np.zeros((16, 1, 8, 8), np.float32))}}
    options = {"concurrency_per_model": 1, "queue_per_model": 1, "body_timeout_s": 20.0}
    with serve_bundles(DirectorySource([slow_bundle.root]), **options) as url:
        port = int(url.rsplit(":", 1)[1])
        with concurrent.futures.ThreadPoolExecutor(2) as ex:
            busy = [ex.submit(httpx.post, f"{url}/v1/infer/slow-net", json=long_input, timeout=120) for _ in range(2)]
            _wait_for(lambda: _metric(url, "edge_queue_depth", model="slow-net") >= 1)
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                start = time.monotonic()
                s.sendall(
                    b"POST /v1/infer/slow-net HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 100000\r\n\r\n"
                )
                answer = s.recv(4096)
                waited = time.monotonic() - start
            assert answer.startswith(b"HTTP/1.1 429"), answer[:200]
            assert b"retry-after" in answer.lower() and waited < 5
            assert [f.result().status_code for f in busy] == [200, 200]
        # The places were given back: the model serves again, and no queue place leaked.
        _wait_for(lambda: _metric(url, "edge_queue_depth", model="slow-net") == 0)
        assert httpx.post(f"{url}/v1/infer/slow-net", json=long_input, timeout=120).status_code == 200
