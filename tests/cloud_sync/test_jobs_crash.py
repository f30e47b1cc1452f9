"""The must-show: 1,000 jobs queued while the cloud is down, the daemon SIGKILLed again and again while it
delivers, and after the last restart every job is done and the receiver executed each key exactly once
(telemetry snapshots, queued every 0.5 s meanwhile, too)."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from receiver_app import free_port, wait_live

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parents[2]
JOBS = 1000
KILL_AT = (150, 400, 650)  # receiver executions at which the daemon is killed


class Daemon:
    """`python -m edge_sdk.cli serve` as a real process, started and SIGKILLed by the test."""

    def __init__(self, tmp: Path, cloud: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.queue = tmp / "queue.sqlite"
        self.log = (tmp / "daemon.log").open("ab")
        self.args = [
            sys.executable, "-m", "edge_sdk.cli", "serve", "--store", str(tmp / "store"), "--port", str(self.port),
            "--cloud-url", cloud, "--queue-path", str(self.queue), "--telemetry-interval", "0.5",
            "--delivery-concurrency", "8", "--delivery-max-backoff", "0.5",
        ]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(self.args, cwd=ROOT, env=env, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "the daemon exited at start: see daemon.log"
            try:
                if httpx.get(f"{self.url}/health/live", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.05)
        raise TimeoutError("the daemon did not come up in 60 s")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)
        self.log.close()

    def states(self, kind: str = "job") -> dict[str, int]:
        """Read the queue file directly (a read-only reader beside the daemon; WAL allows it)."""
        with sqlite3.connect(f"file:{self.queue}?mode=ro", uri=True) as db:
            rows = db.execute("SELECT state, COUNT(*) FROM items WHERE kind = ? GROUP BY state", (kind,))
            return dict(rows.fetchall())


def executions(cloud: str) -> dict[str, int]:
    return httpx.get(f"{cloud}/executions", timeout=10).json()


def wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_1000_jobs_survive_sigkills_during_delivery_exactly_once(tmp_path):
    cloud_port = free_port()
    cloud = f"http://127.0.0.1:{cloud_port}"
    daemon = Daemon(tmp_path, cloud)
    receiver = None
    try:
        daemon.start()  # the cloud is down: nothing listens on cloud_port yet
        keys = [f"order-{i:04d}" for i in range(JOBS)]

        def submit(key: str) -> str:
            body = {"model": "smollm2", "prompt": f"job {key}", "max_tokens": 4}
            reply = httpx.post(
                f"{daemon.url}/v1/jobs",
                json={"endpoint": "/v1/completions", "body": body, "idempotency_key": key},
                timeout=30,
            )
            assert reply.status_code == 202, reply.text
            return str(reply.json()["id"])

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            ids = dict(zip(keys, pool.map(submit, keys), strict=True))
        assert daemon.states().get("done", 0) == 0

        receiver = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("receiver_app.py")), "--port", str(cloud_port),
             "--db", str(tmp_path / "idem.sqlite"), "--delay-ms", "5"],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        wait_live(cloud)
        in_flight_at_kill = 0
        for threshold in KILL_AT:
            wait_for(lambda t=threshold: len(executions(cloud)) >= t, 60, f"{threshold} executions")
            daemon.kill()
            in_flight_at_kill += daemon.states().get("delivering", 0)
            daemon.start()
        wait_for(lambda: daemon.states().get("done", 0) == JOBS, 90, "every job done")

        counts = executions(cloud)
        assert {k for k in counts if not k.startswith("telemetry-")} == set(keys)  # none lost, nothing unknown
        assert [k for k, n in counts.items() if n != 1] == []  # each job and snapshot executed exactly once
        assert sum(k.startswith("telemetry-") for k in counts) >= daemon.states("telemetry").get("done", 0) > 0
        assert in_flight_at_kill > 0  # the kills really landed during delivery
        for key in keys[:: JOBS // 50]:  # what a client sees, sampled
            state = httpx.get(f"{daemon.url}/v1/jobs/{ids[key]}").json()
            assert state["state"] == "done" and state["result"]["key"] == key and state["result"]["n"] == 1
    finally:
        daemon.stop()
        if receiver is not None:
            receiver.terminate()
            receiver.wait(timeout=20)
