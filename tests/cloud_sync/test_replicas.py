"""Two gateway replicas on one PostgreSQL behind a load balancer: one fleet, one state, a replica killed.

Real processes (`edge-sdk cloud serve --database-url ...`), a real PostgreSQL, a TCP balancer in the test, and
the device's own delivery loop sending its queued jobs through the balancer. One replica is SIGKILLed while
it forwards jobs to the upstream: every job still completes (0 lost) and the upstream ran each once (0
duplicated), because the idempotency claims live in the shared database and name the dead process.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from gateway_helpers import DEVICE_KEY, Balancer, auth, free_port, publish
from test_gateway_crash import RECEIVER, _executions, _kill, _start

from cloud_sync.delivery import DeliveryLoop, DeliveryPolicy
from cloud_sync.queue import ItemKind, ItemState, OfflineQueue

JOBS = 24
BODY = {"model": "only-upstream-has-it", "messages": [{"role": "user", "content": "Summarise the day"}]}


def _gateway_cmd(key_files, registry: Path, port: int, database_url: str, upstream: str) -> list[str]:
    return [
        sys.executable, "-m", "edge_sdk.cli", "cloud", "serve",
        "--device-keys", str(key_files["devices"]), "--publisher-keys", str(key_files["publishers"]),
        "--registry", str(registry), "--port", str(port), "--database-url", database_url, "--upstream", upstream,
    ]  # fmt: skip


@pytest.mark.slow
def test_replicas_share_state_and_a_killed_one_loses_and_duplicates_nothing(
    postgres, key_files, packed_versions, tmp_path
):
    database_url = postgres.database()
    upstream_port, ports = free_port(), [free_port(), free_port()]
    upstream_url = f"http://127.0.0.1:{upstream_port}"
    replicas = [f"http://127.0.0.1:{p}" for p in ports]
    receiver = [sys.executable, str(RECEIVER), "--port", str(upstream_port), "--db", str(tmp_path / "up.sqlite")]
    upstream = _start([*receiver, "--delay-ms", "1500"], f"{upstream_url}/executions", tmp_path / "upstream.log")
    procs = [
        _start(
            _gateway_cmd(key_files, tmp_path / "registry", port, database_url, upstream_url),
            f"{url}/health/live",
            tmp_path / f"gateway-{i}.log",
        )
        for i, (port, url) in enumerate(zip(ports, replicas, strict=True))
    ]
    balancer = Balancer(replicas)
    queue = OfflineQueue(tmp_path / "device-queue.sqlite")
    try:
        # one registry, one state: published on one replica, listed by the other
        assert publish(replicas[0], packed_versions["1.0.0"]).status_code == 201
        listed = httpx.get(f"{replicas[1]}/v1/registry/bundles", headers=auth(DEVICE_KEY), timeout=30).json()
        assert [e["version"] for e in listed["data"]] == ["1.0.0"]
        again = publish(replicas[1], packed_versions["1.0.0"])
        assert again.status_code == 200  # already there, whichever replica is asked

        ids = [
            queue.enqueue(ItemKind.JOB, "/v1/chat/completions", {**BODY, "user": f"job-{i}"})[0].id for i in range(JOBS)
        ]
        policy = DeliveryPolicy(concurrency=4, base_backoff_s=0.1, max_backoff_s=1.0, timeout_s=30, idle_poll_s=0.1)
        done = threading.Event()

        async def deliver() -> None:
            loop = DeliveryLoop(queue, balancer.url, api_key=DEVICE_KEY, policy=policy)
            loop.start()
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline and not done.is_set():
                counts = queue.counts()
                if counts["queued"] + counts["delivering"] == 0:
                    break
                await asyncio.sleep(0.1)
            await loop.stop()

        device = threading.Thread(target=asyncio.run, args=(deliver(),), daemon=True)
        device.start()
        deadline = time.monotonic() + 60
        while sum(_executions(upstream_url).values()) < 6:  # jobs in flight through both replicas
            assert time.monotonic() < deadline, (
                f"jobs never reached the upstream: {queue.counts()} {queue.get(ids[0])} "
                + (tmp_path / "gateway-0.log").read_text()[-1500:]
            )
            time.sleep(0.05)
        _kill(procs[0])  # SIGKILL mid-delivery: its in-flight claims stay "in progress" in PostgreSQL
        device.join(timeout=300)
        done.set()

        states = [queue.get(i).state for i in ids]
        assert states.count(ItemState.DONE) == JOBS, states  # 0 lost
        executions = _executions(upstream_url)
        assert len(executions) == JOBS and set(executions.values()) == {1}, executions  # 0 duplicated
        assert all(queue.get(i).result["n"] == 1 for i in ids)
        assert 0 in balancer.picked and 1 in balancer.picked  # both replicas took work

    finally:
        balancer.close()
        queue.close()
        for proc in procs:
            _kill(proc)
        _kill(upstream)
