"""Exactly-once across a gateway crash: the gateway is SIGKILLed while its upstream runs a device's request.

The gateway passes each (device, Idempotency-Key) to its upstream as one upstream key, and its claim names
the process that holds it. After the restart the device's retry is taken over at once (the holder is dead)
and answered by the upstream's own idempotency: the upstream ran the request once, and the device sees one
result however often it asks. The gateway's claims live in SQLite, then in PostgreSQL.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from gateway_helpers import DEVICE_KEY, auth, free_port

from cloud_sync.idempotency import upstream_key

RECEIVER = Path(__file__).parent / "receiver_app.py"
BODY = {"model": "only-upstream-has-it", "messages": [{"role": "user", "content": "Summarise the day"}]}


def _start(cmd: list[str], live: str, log: Path) -> subprocess.Popen:
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            httpx.get(live, timeout=1)
            return proc
        except httpx.HTTPError:
            assert proc.poll() is None, log.read_text()[-2000:]
            time.sleep(0.1)
    raise AssertionError(f"{cmd[:4]} did not come up: {log.read_text()[-2000:]}")


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def test_a_gateway_killed_mid_request_runs_it_once_and_answers_once(key_files, database_url, tmp_path):
    upstream_port, gateway_port = free_port(), free_port()
    upstream_url, gateway_url = f"http://127.0.0.1:{upstream_port}", f"http://127.0.0.1:{gateway_port}"
    receiver = [sys.executable, str(RECEIVER), "--port", str(upstream_port), "--db", str(tmp_path / "up.sqlite")]
    gateway_cmd = [sys.executable, "-m", "edge_sdk.cli", "cloud", "serve", "--device-keys", str(key_files["devices"])]
    gateway_cmd += ["--registry", str(tmp_path / "registry"), "--port", str(gateway_port), "--upstream", upstream_url]
    gateway_cmd += ["--database-url", database_url] if database_url else []
    headers = {**auth(DEVICE_KEY), "Idempotency-Key": "order-17"}
    url = f"{gateway_url}/v1/chat/completions"
    upstream = _start([*receiver, "--delay-ms", "4000"], f"{upstream_url}/executions", tmp_path / "upstream.log")
    gateway = _start(gateway_cmd, f"{gateway_url}/health/live", tmp_path / "gateway.log")
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as ex:
            first = ex.submit(httpx.post, url, json=BODY, headers=headers, timeout=60)
            deadline = time.monotonic() + 30
            while not _executions(upstream_url):  # the upstream is running it now
                assert time.monotonic() < deadline, "the request never reached the upstream"
                time.sleep(0.05)
            _kill(gateway)  # SIGKILL mid-request: the gateway's claim stays "in progress" in its database
            try:
                lost = first.result()
                raise AssertionError(f"the killed gateway answered: {lost.status_code}")
            except httpx.HTTPError:
                pass  # the device saw no result: it retries, as its delivery loop does
        gateway = _start(gateway_cmd, f"{gateway_url}/health/live", tmp_path / "gateway.log")
        start = time.monotonic()
        retry = httpx.post(url, json=BODY, headers=headers, timeout=60)
        waited = time.monotonic() - start
        assert retry.status_code == 200, retry.text
        assert waited < 30  # taken over at once, not after the 300 s lease
        again = httpx.post(url, json=BODY, headers=headers, timeout=60)
        assert again.status_code == 200 and again.headers.get("idempotent-replayed") == "true"
        assert again.json() == retry.json()  # one result for one key, however often the device asks
        executions = _executions(upstream_url)
        key = upstream_key("pi-kitchen", "order-17")
        assert executions == {key: 1}, executions  # the upstream ran it once, under the device's own key
        assert retry.json()["key"] == key and retry.json()["n"] == 1
    finally:
        _kill(gateway)
        _kill(upstream)


def _executions(upstream_url: str) -> dict[str, int]:
    return httpx.get(f"{upstream_url}/executions", timeout=5).json()
