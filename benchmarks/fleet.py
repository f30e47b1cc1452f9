"""A fleet against the gateway: N simulated devices (async clients on loopback) sync, send telemetry and queue
jobs, against 2 replicas on PostgreSQL behind a TCP balancer, and against 1 replica on SQLite.

Each device, in a loop until the time is up: lists the registry (what `sync` does first), posts a telemetry
snapshot with an Idempotency-Key, and every few rounds sends a job (a chat completion for a model only the
upstream has) with an Idempotency-Key, retried on failure as a device's delivery loop would. The upstream
counts executions per key. Printed and written to benchmarks/results/fleet.json: requests/s, p50/p99 latency
per kind, and lost / duplicated jobs (goal 0 / 0).

    python benchmarks/fleet.py                  # 1,000 devices, 120 s per setup (needs root for PostgreSQL)
    python benchmarks/fleet.py --quick          # 200 devices, 20 s per setup

PostgreSQL runs as a throwaway cluster as the `postgres` user (Debian's binaries); bundles are not
downloaded (the registry list is what every sync does; downloads are measured by benchmarks/gateway.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def wait_live(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            if proc.poll() is not None:
                raise SystemExit(f"{url} did not start: {log.read_text()[-2000:]}") from None
            time.sleep(0.2)
    raise SystemExit(f"{url} did not start within {timeout_s} s")


def start(cmd: list[str], live: str, log: Path) -> subprocess.Popen:
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    wait_live(live, proc, log)
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

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))


async def device(index: int, url: str, until: float, stats: dict[str, list[float]], jobs: dict[str, int]) -> None:
    key = f"device-key-{index:05d}-0123456789"
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as client:
        rounds = 0
        while time.monotonic() < until:
            rounds += 1
            started = time.monotonic()
            response = await client.get("/v1/registry/bundles")
            if response.status_code == 200:
                stats["sync"].append(time.monotonic() - started)
            started = time.monotonic()
            snapshot = {"models": {}, "ready": True, "counters": {}}
            response = await client.post(
                "/v1/telemetry", json={"items": [snapshot]}, headers={"Idempotency-Key": uuid.uuid4().hex}
            )
            if response.status_code == 202:
                stats["telemetry"].append(time.monotonic() - started)
            if rounds % 3 == 1:
                job_key = f"job-{index}-{rounds}"
                body = {"model": "only-upstream-has-it", "messages": [{"role": "user", "content": "hi"}]}
                for attempt in range(8):  # a device's delivery loop: the same key until it gets an answer
                    started = time.monotonic()
                    try:
                        response = await client.post(
                            "/v1/chat/completions", json=body, headers={"Idempotency-Key": job_key}
                        )
                    except httpx.HTTPError:
                        await asyncio.sleep(0.2 * 2**attempt)
                        continue
                    if response.status_code == 200:
                        stats["job"].append(time.monotonic() - started)
                        jobs[job_key] = 1
                        break
                    await asyncio.sleep(0.2 * 2**attempt)
                else:
                    jobs[job_key] = 0  # lost: never answered
            await asyncio.sleep(0.5)


async def drive(url: str, devices: int, seconds: float) -> tuple[dict[str, list[float]], dict[str, int], float]:
    stats: dict[str, list[float]] = defaultdict(list)
    jobs: dict[str, int] = {}
    started = time.monotonic()
    until = started + seconds
    await asyncio.gather(*(device(i, url, until, stats, jobs) for i in range(devices)))
    return stats, jobs, time.monotonic() - started


def run_setup(name: str, base: Path, devices: int, seconds: float, database_url: str | None, replicas: int) -> dict:
    work = base / name
    work.mkdir()
    keys = work / "devices.txt"
    keys.write_text("".join(f"pi-{i:05d} device-key-{i:05d}-0123456789\n" for i in range(devices)))
    up_port = free_port()
    (work / "upstream.py").write_text(UPSTREAM)
    upstream = start([sys.executable, str(work / "upstream.py"), str(up_port)], f"http://127.0.0.1:{up_port}/executions",
                     work / "upstream.log")  # fmt: skip
    ports = [free_port() for _ in range(replicas)]
    procs = []
    try:
        for i, port in enumerate(ports):
            cmd = [sys.executable, "-m", "edge_sdk.cli", "cloud", "serve", "--device-keys", str(keys),
                   "--registry", str(work / "registry"), "--port", str(port), "--log-level", "warning",
                   "--upstream", f"http://127.0.0.1:{up_port}"]  # fmt: skip
            if database_url:
                cmd += ["--database-url", database_url]
            procs.append(start(cmd, f"http://127.0.0.1:{port}/health/live", work / f"gateway-{i}.log"))

        async def go() -> tuple[dict[str, list[float]], dict[str, int], float]:
            if replicas == 1:
                return await drive(f"http://127.0.0.1:{ports[0]}", devices, seconds)
            balancer = Balancer(ports)
            server = await balancer.serve()
            try:
                return await drive(f"http://127.0.0.1:{balancer.port}", devices, seconds)
            finally:
                server.close()

        stats, jobs, elapsed = asyncio.run(go())
        executions = httpx.get(f"http://127.0.0.1:{up_port}/executions", timeout=30).json()
    finally:
        for proc in procs:
            stop(proc)
        stop(upstream)
    requests = sum(len(v) for v in stats.values())
    return {
        "setup": name,
        "devices": devices,
        "seconds": round(elapsed, 1),
        "requests_per_s": round(requests / elapsed, 1),
        "latency_ms": {
            kind: {"p50": round(percentile(v, 50) * 1000, 1), "p99": round(percentile(v, 99) * 1000, 1), "n": len(v)}
            for kind, v in sorted(stats.items())
        },
        "jobs": len(jobs),
        "lost": sum(1 for ok in jobs.values() if not ok),
        "duplicated": sum(1 for n in Counter(executions).values() if n > 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--quick", action="store_true", help="200 devices, 20 s per setup")
    args = parser.parse_args()
    devices, seconds = (200, 20.0) if args.quick else (args.devices, args.seconds)
    if os.geteuid() != 0:
        raise SystemExit("run as root: PostgreSQL runs as a throwaway cluster as the `postgres` user")
    base = Path(tempfile.mkdtemp(prefix="edge-fleet-"))
    shutil.chown(base, "postgres", "postgres")
    pg = Postgres(base)
    try:
        rows = [
            run_setup("2 replicas, PostgreSQL", base, devices, seconds, pg.url, replicas=2),
            run_setup("1 replica, SQLite", base, devices, seconds, None, replicas=1),
        ]
    finally:
        pg.close()
        shutil.rmtree(base, ignore_errors=True)
    print(f"{devices} devices, {seconds:g} s per setup, load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} cores")
    print(f"{'setup':26} {'req/s':>8} {'sync p50/p99 ms':>18} {'telemetry p50/p99':>18} {'job p50/p99':>16} lost dup")
    for r in rows:
        lat = r["latency_ms"]

        def pair(kind: str, lat: dict = lat) -> str:
            return f"{lat.get(kind, {}).get('p50', float('nan'))}/{lat.get(kind, {}).get('p99', float('nan'))}"

        print(f"{r['setup']:26} {r['requests_per_s']:>8} {pair('sync'):>18} {pair('telemetry'):>18} "
              f"{pair('job'):>16} {r['lost']:>4} {r['duplicated']:>3}")  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = {"machine": platform.machine(), "cores": os.cpu_count(), "load_average": os.getloadavg(), "results": rows}
    (RESULTS / "fleet.json").write_text(json.dumps(out, indent=2))
    print(f"wrote {RESULTS / 'fleet.json'}; goal: 0 lost, 0 duplicated")
    if any(r["lost"] or r["duplicated"] for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
