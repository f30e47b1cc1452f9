"""A fleet against the gateway: N simulated devices (async clients on loopback) sync, send telemetry and queue
jobs, against 2 replicas on PostgreSQL behind a TCP balancer, and against 1 replica on SQLite.

Each device, in a loop until the time is up: lists the registry (what `sync` does first), posts a telemetry
snapshot with an Idempotency-Key, and every third round sends a job (a chat completion for a model only the
upstream has) with an Idempotency-Key, retried with the same key until answered, as a device's delivery loop
does; then it waits `--think` (0.5 s). This is a closed loop: the devices ask as fast as the gateway answers
them (far more often than real boards), so requests/s is what the gateway (and the driver, on the same
machine: its CPU share is reported) can do here, and the latencies are mostly queueing (Little's law: devices
in flight / requests per second). The upstream counts executions per key.

Printed and written to benchmarks/results/fleet.json (with the machine, load average and commit):
requests/s, p50/p90/p99 latency per kind, failed requests, and lost / duplicated jobs (goal 0 / 0).

    python benchmarks/fleet.py                  # 1,000 devices, 120 s per setup (needs root for PostgreSQL)
    python benchmarks/fleet.py --seconds 60     # a shorter run on a loaded machine
    python benchmarks/fleet.py --quick          # 200 devices, 20 s per setup

PostgreSQL runs as a throwaway cluster as the `postgres` user (Debian's binaries, durable: fsync on); bundles
are not downloaded (the registry list is what every sync does; downloads are measured by benchmarks/gateway.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import resource
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import httpx
from _common import free_port, load_average, ratio, summary, wait_ready, write_results  # benchmarks/ is on sys.path

UPSTREAM = """
import sys
from collections import Counter
import uvicorn
from fastapi import FastAPI, Request
app, seen = FastAPI(), Counter()
@app.post("/v1/chat/completions")
async def chat(request: Request):
    key = request.headers.get("idempotency-key", "")
    seen[key] += 1
    return {"object": "chat.completion", "key": key, "n": seen[key],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}]}
@app.get("/executions")
async def executions():
    return dict(seen)
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


def start(cmd: list[str], url: str, ready_path: str, log: Path) -> subprocess.Popen:
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_ready(url, ready_path, process=proc, timeout_s=120, interval_s=0.2)
    except (RuntimeError, TimeoutError) as exc:
        stop(proc)
        raise SystemExit(f"{url} did not start ({exc}): {log.read_text()[-2000:]}") from None
    return proc


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


class Postgres:
    def __init__(self, base: Path) -> None:
        self.dir, self.port = base / "pg", free_port()
        self.dir.mkdir()
        shutil.chown(self.dir, "postgres", "postgres")
        binary = shutil.which("initdb") or sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))[-1]
        self.bin = Path(binary).parent
        self._run(str(self.bin / "initdb"), "-D", str(self.dir / "data"), "-A", "trust", "-U", "postgres", "--no-sync")
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=200"
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), "-o", options, "-l", str(self.dir / "log"),
                  "-w", "start")  # fmt: skip
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *cmd: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *cmd], check=True, capture_output=True, timeout=120)

    def close(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError):
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "fast", "-w", "stop")


class Balancer:
    """Round-robin TCP balancer (asyncio), skipping a replica that refuses the connection."""

    def __init__(self, ports: list[int]) -> None:
        self.ports, self.next, self.port = ports, 0, free_port()

    async def serve(self) -> asyncio.AbstractServer:
        return await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in self.ports:
            port = self.ports[self.next % len(self.ports)]
            self.next += 1
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
                break
            except OSError:
                continue
        else:
            writer.close()
            return

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(OSError):
                dst.close()

        with contextlib.suppress(asyncio.CancelledError):  # the run is over: connections still open just end
            await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))


class Fleet:
    """What the simulated devices saw: latencies per kind, failed requests per kind and reason, and each job's
    fate (answered or not)."""

    def __init__(self, url: str, until: float, think_s: float) -> None:
        self.url, self.until, self.think_s = url, until, think_s
        # one TLS context for all: httpx builds (and loads CA certificates into) one per client otherwise, tens of
        # CPU-milliseconds each, which for 1,000 clients stalls the driver's event loop for seconds
        self.tls = ssl.create_default_context()
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.failures: Counter[str] = Counter()
        self.jobs: dict[str, bool] = {}

    async def timed(self, kind: str, ok: int, request) -> bool:  # type: ignore[no-untyped-def]
        started = time.monotonic()
        try:
            response = await request
        except httpx.HTTPError as exc:
            self.failures[f"{kind}: {type(exc).__name__}"] += 1
            return False
        if response.status_code != ok:
            self.failures[f"{kind}: {response.status_code}"] += 1
            return False
        self.latency[kind].append(time.monotonic() - started)
        return True

    async def device(self, index: int) -> None:
        """One board: list the registry (sync's first step), send a telemetry snapshot, and every third round
        queue a job, retried with the same Idempotency-Key until answered (a device's delivery loop)."""
        headers = {"Authorization": f"Bearer device-key-{index:05d}-0123456789"}
        await asyncio.sleep(random.uniform(0, 1))  # boards do not all wake in the same millisecond
        async with httpx.AsyncClient(base_url=self.url, headers=headers, timeout=60, verify=self.tls) as client:
            rounds = 0
            while time.monotonic() < self.until:
                rounds += 1
                await self.timed("sync", 200, client.get("/v1/registry/bundles"))
                snapshot = {"models": {}, "ready": True, "counters": {}}
                keyed = {"Idempotency-Key": uuid.uuid4().hex}
                telemetry = client.post("/v1/telemetry", json={"items": [snapshot]}, headers=keyed)
                await self.timed("telemetry", 202, telemetry)
                if rounds % 3 == 1:
                    await self.job(client, f"job-{index}-{rounds}")
                await asyncio.sleep(self.think_s)

    async def job(self, client: httpx.AsyncClient, key: str) -> None:
        body = {"model": "only-upstream-has-it", "messages": [{"role": "user", "content": "hi"}]}
        self.jobs[key] = False
        for attempt in range(8):  # ~50 s of backoff in all: a job not answered by then counts lost
            request = client.post("/v1/chat/completions", json=body, headers={"Idempotency-Key": key})
            if await self.timed("job", 200, request):
                self.jobs[key] = True
                return
            await asyncio.sleep(0.2 * 2**attempt)

    async def drive(self, devices: int) -> tuple[float, float]:
        """Seconds elapsed, and the share of one CPU the driver itself used (near 1: the driver, not the gateway,
        may be what limits the figures)."""
        started, cpu = time.monotonic(), time.process_time()
        await asyncio.gather(*(self.device(i) for i in range(devices)))
        elapsed = time.monotonic() - started
        return elapsed, (time.process_time() - cpu) / elapsed


def run_setup(
    name: str, base: Path, devices: int, seconds: float, think_s: float, database_url: str | None, replicas: int
) -> dict:
    work = base / name.replace(" ", "-").replace(",", "")
    work.mkdir()
    keys = work / "devices.txt"
    keys.write_text("".join(f"pi-{i:05d} device-key-{i:05d}-0123456789\n" for i in range(devices)))
    up_port = free_port()
    (work / "upstream.py").write_text(UPSTREAM)
    upstream = start([sys.executable, str(work / "upstream.py"), str(up_port)], f"http://127.0.0.1:{up_port}",
                     "/executions", work / "upstream.log")  # fmt: skip
    ports = [free_port() for _ in range(replicas)]
    procs = []
    try:
        for i, port in enumerate(ports):
            cmd = [sys.executable, "-m", "edge_sdk.cli", "cloud", "serve", "--device-keys", str(keys),
                   "--registry", str(work / "registry"), "--port", str(port), "--log-level", "warning",
                   "--upstream", f"http://127.0.0.1:{up_port}",
                   # every device keeps its connection open: a replica must take them all (default cap 512: 503)
                   "--max-connections", str(devices + 256)]  # fmt: skip
            if database_url:
                cmd += ["--database-url", database_url]
            procs.append(start(cmd, f"http://127.0.0.1:{port}", "/health/ready", work / f"gateway-{i}.log"))

        async def go() -> tuple[Fleet, tuple[float, float]]:
            if replicas == 1:
                fleet = Fleet(f"http://127.0.0.1:{ports[0]}", time.monotonic() + seconds, think_s)
                return fleet, await fleet.drive(devices)
            balancer = Balancer(ports)
            server = await balancer.serve()
            try:
                fleet = Fleet(f"http://127.0.0.1:{balancer.port}", time.monotonic() + seconds, think_s)
                return fleet, await fleet.drive(devices)
            finally:
                server.close()

        print(f"{name}: {devices} devices for {seconds:g} s ...", flush=True)
        fleet, (elapsed, driver_cpu) = asyncio.run(go())
        executions = httpx.get(f"http://127.0.0.1:{up_port}/executions", timeout=30).json()
    finally:
        for proc in procs:
            stop(proc)
        stop(upstream)
    requests = sum(len(v) for v in fleet.latency.values())
    return {
        "setup": name,
        "devices": devices,
        "replicas": replicas,
        "database": "postgresql" if database_url else "sqlite",
        "seconds": round(elapsed, 1),
        "think_s": think_s,
        "driver_cpu_share": round(driver_cpu, 2),
        "load_average_after": round(load_average(), 1),
        "requests_answered": requests,
        "requests_per_s": round(requests / elapsed, 1),
        "latency_ms": {kind: summary(v, 1e3) for kind, v in sorted(fleet.latency.items()) if v},
        "failed_requests": dict(fleet.failures),
        "jobs": len(fleet.jobs),
        "lost": sum(1 for answered in fleet.jobs.values() if not answered),
        "duplicated": sum(1 for n in executions.values() if n > 1),
        "upstream_executions": sum(executions.values()),
    }


def _pair(row: dict, kind: str) -> str:
    lat = row["latency_ms"].get(kind)
    return f"{lat['p50']:.0f}/{lat['p99']:.0f}" if lat else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--think", type=float, default=0.5, help="seconds a device waits between its rounds")
    parser.add_argument("--quick", action="store_true", help="200 devices, 20 s per setup")
    args = parser.parse_args()
    devices, seconds = (200, 20.0) if args.quick else (args.devices, args.seconds)
    if os.geteuid() != 0:
        raise SystemExit("run as root: PostgreSQL runs as a throwaway cluster as the `postgres` user")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # each device holds a connection, the balancer two
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8 * devices + 1024)), hard))
    started = time.perf_counter()
    load_before = load_average()
    base = Path(tempfile.mkdtemp(prefix="edge-fleet-"))
    shutil.chown(base, "postgres", "postgres")
    pg = Postgres(base)
    try:
        rows = [
            run_setup("2 replicas, PostgreSQL", base, devices, seconds, args.think, pg.url, replicas=2),
            run_setup("1 replica, SQLite", base, devices, seconds, args.think, None, replicas=1),
        ]
    finally:
        pg.close()
        shutil.rmtree(base, ignore_errors=True)
    print(f"{devices} devices, {seconds:g} s per setup; load average {load_before:.1f} before, "
          f"{load_average():.1f} after, {os.cpu_count()} CPUs")  # fmt: skip
    print(f"{'setup':24} {'req/s':>7} {'sync p50/p99 ms':>16} {'telemetry':>12} {'job':>12} {'jobs':>6} lost dup "
          "driver CPU")  # fmt: skip
    for r in rows:
        print(f"{r['setup']:24} {r['requests_per_s']:>7} {_pair(r, 'sync'):>16} {_pair(r, 'telemetry'):>12} "
              f"{_pair(r, 'job'):>12} {r['jobs']:>6} {r['lost']:>4} {r['duplicated']:>3} "
              f"{r['driver_cpu_share']:>10.0%}")  # fmt: skip
        if r["failed_requests"]:
            print(f"  failed (each retried or counted): {r['failed_requests']}")
    ratios = [
        ratio(f"{r['setup']}: {what} jobs", r[what], 0, higher_is_better=False)
        for r in rows
        for what in ("lost", "duplicated")
    ]
    payload = {"devices": devices, "seconds_per_setup": seconds, "load_average_before": load_before,
               "results": rows, "ratios": ratios}  # fmt: skip
    write_results("fleet", payload, started=started)
    if any(r["lost"] or r["duplicated"] for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
