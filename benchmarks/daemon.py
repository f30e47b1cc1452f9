"""The daemon under load: the digits CNN over HTTP at 1, 4 and 16 concurrent clients vs the session in process.

    python benchmarks/daemon.py [--seconds 5]

Prints p50/p99 latency and throughput per concurrency, the in-process baseline, and the daemon's resident
memory; writes benchmarks/results/daemon.json. The daemon runs as a separate process on loopback, as on a
device. Then SmolLM2 decode speed: tokens/s streamed over HTTP (SSE) vs the same session in process
(goal >= 0.95), alternating runs, medians. And a burst: 200 concurrent tensor requests at a daemon with one
slot and a queue of 4; the client-side latency of the 429 answers (goal: p50 < 50 ms).

    python benchmarks/daemon.py --burst-only     # just the burst (~30 s)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from _common import free_port, percentile, ratio, wait_ready, write_results  # benchmarks/ is on sys.path

import edge_sdk


def _load(url: str, body: dict, clients: int, seconds: float) -> dict:
    latencies: list[float] = []
    errors = 0
    stop = time.monotonic() + seconds
    lock = threading.Lock()

    def worker() -> None:
        nonlocal errors
        with httpx.Client(timeout=30) as client:
            while time.monotonic() < stop:
                start = time.perf_counter()
                ok = client.post(url, json=body).status_code == 200
                with lock:
                    if ok:
                        latencies.append(time.perf_counter() - start)
                    else:
                        errors += 1

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {
        "clients": clients,
        "requests": len(latencies),
        "errors": errors,
        "p50_ms": percentile(latencies, 50) * 1e3,
        "p99_ms": percentile(latencies, 99) * 1e3,
        "throughput_rps": len(latencies) / seconds,
    }


def measure_burst(bundle_root: Path, x, clients: int = 200) -> dict:
    """`clients` requests sent at once; the 429s must come back at once, not after every body is parsed."""
    import asyncio

    import numpy as np

    batch = np.repeat(x, 64, axis=0)  # ~30 KB of JSON a request, a few ms of compute: the slot stays busy
    body = {"inputs": {"input": {"dtype": "float32", "shape": list(batch.shape), "data": batch.ravel().tolist()}}}
    raw, headers = json.dumps(body).encode(), {"content-type": "application/json"}  # encoded once: time the server
    port = free_port()
    cmd = [sys.executable, "-m", "edge_sdk.cli", "serve", str(bundle_root), "--port", str(port),
           "--concurrency", "1", "--queue", "4"]  # fmt: skip
    daemon = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1/infer/digits-cnn"

    live = url.rsplit("/v1/", 1)[0] + "/health/live"

    async def burst() -> tuple[list[tuple[int, float]], list[float]]:
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            await asyncio.gather(*(client.get(live) for _ in range(clients)))  # connections open first

            async def timed(request) -> tuple[int, float]:
                start = time.perf_counter()
                status = (await request()).status_code
                return status, time.perf_counter() - start

            # The floor on this machine: the same burst at the cheapest route there is.
            floor = await asyncio.gather(*(timed(lambda: client.get(live)) for _ in range(clients)))
            post = lambda: client.post(url, content=raw, headers=headers)  # noqa: E731
            return await asyncio.gather(*(timed(post) for _ in range(clients))), sorted(t for _, t in floor)

    try:
        wait_ready(url.rsplit("/v1/", 1)[0], process=daemon)
        results, floor = asyncio.run(burst())
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
    refused = sorted(t for status, t in results if status == 429)
    served = sorted(t for status, t in results if status == 200)
    pct = lambda xs, q: percentile(xs, q * 100) * 1e3 if xs else float("nan")  # noqa: E731
    return {
        "clients": clients,
        "served": len(served),
        "refused_429": len(refused),
        "other": len(results) - len(served) - len(refused),
        "p50_429_ms": pct(refused, 0.5),
        "p99_429_ms": pct(refused, 0.99),
        "p50_200_ms": pct(served, 0.5),
        "p50_health_live_same_burst_ms": pct(floor, 0.5),
        "goal_p50_429_ms": 50,
    }


def _print_burst(b: dict) -> None:
    print(
        f"burst of {b['clients']}: {b['served']} served, {b['refused_429']} got 429 (p50 {b['p50_429_ms']:.1f} ms, "
        f"p99 {b['p99_429_ms']:.1f} ms; goal p50 < {b['goal_p50_429_ms']} ms), {b['other']} other; "
        f"/health/live in the same burst: p50 {b['p50_health_live_same_burst_ms']:.1f} ms"
    )


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


PROMPT = "Once upon a time, in a small village by the sea,"


def _decode_rate(pieces, start: float) -> tuple[float, int]:
    """Tokens/s after the first token (prompt processing excluded), and the token count."""
    first, count = None, 0
    for _ in pieces:
        count += 1
        if first is None:
            first = time.perf_counter()
    end = time.perf_counter()
    return ((count - 1) / (end - first) if first and count > 1 else 0.0), count


def measure_decode(tmp: Path, runs: int, tokens: int) -> dict:
    from converters.gguf.zoo import smollm2_as_shipped

    bundle = smollm2_as_shipped(tmp / "smollm2")
    opts = {"max_tokens": tokens, "temperature": 0.0, "seed": 0}
    port = free_port()
    daemon = subprocess.Popen(
        [sys.executable, "-m", "edge_sdk.cli", "serve", str(bundle.root), "--port", str(port), "--threads", "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    local, remote = [], []
    try:
        wait_ready(url, process=daemon)
        body = {"model": "smollm2", "prompt": PROMPT, "stream": True, **opts}
        with edge_sdk.load(bundle, threads=2) as session:
            for _ in range(runs):  # alternate so that noise hits both sides alike
                local.append(_decode_rate(session.generate(PROMPT, **opts), time.perf_counter())[0])
                with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=300) as r:
                    events = (line for line in r.iter_lines() if line.startswith("data: {"))
                    chunks = (e for e in events if json.loads(e[6:])["choices"][0]["text"])
                    remote.append(_decode_rate(chunks, time.perf_counter())[0])
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
    in_proc, http = statistics.median(local), statistics.median(remote)
    return {
        "model": "SmolLM2-135M-Instruct Q4_1",
        "runs": runs,
        "max_tokens": tokens,
        "in_process_tokens_per_s": in_proc,
        "http_tokens_per_s": http,
        "ratio_http_over_in_process": http / in_proc,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--decode-runs", type=int, default=5)
    parser.add_argument("--decode-tokens", type=int, default=128)
    parser.add_argument("--burst-only", action="store_true", help="Only the 200-request burst (429 latency).")
    args = parser.parse_args()
    from converters.zoo import digits_data

    x = digits_data().test_x[:1]
    if args.burst_only:
        with tempfile.TemporaryDirectory() as tmp:
            bundle = edge_sdk.convert("zoo:digits-cnn", quantize="int8-static", output=Path(tmp) / "b")
            result = measure_burst(bundle.root, x)
        _print_burst(result)
        write_results("daemon_burst", result)
        return
    body = {"inputs": {"input": {"dtype": "float32", "shape": list(x.shape), "data": x.ravel().tolist()}}}
    with tempfile.TemporaryDirectory() as tmp:
        bundle = edge_sdk.convert("zoo:digits-cnn", quantize="int8-static", output=Path(tmp) / "b")
        with edge_sdk.load(bundle) as session:
            times = []
            for _ in range(2000):
                start = time.perf_counter()
                session.run({"input": x})
                times.append(time.perf_counter() - start)
        port = free_port()
        daemon = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "edge_sdk.cli",
                "serve",
                str(bundle.root),
                "--port",
                str(port),
                "--concurrency",
                "2",
                "--queue",
                "64",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(url, process=daemon)
            rows = [_load(f"{url}/v1/infer/digits-cnn", body, c, args.seconds) for c in (1, 4, 16)]
            rss = _rss(daemon.pid)
        finally:
            daemon.terminate()
            daemon.wait(timeout=30)
        burst = measure_burst(bundle.root, x)
        decode = measure_decode(Path(tmp), args.decode_runs, args.decode_tokens)
    in_process_ms = percentile(times, 50) * 1e3
    print(f"in process: median {in_process_ms:.3f} ms per call (batch 1)")
    print(f"{'clients':>7} {'requests':>8} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8} {'errors':>6}")
    for r in rows:
        print(
            f"{r['clients']:>7} {r['requests']:>8} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
            f"{r['throughput_rps']:>8.0f} {r['errors']:>6}"
        )
    print(f"daemon resident memory (digits CNN loaded): {rss / 2**20:.0f} MB")
    _print_burst(burst)
    print(
        f"SmolLM2 decode: in process {decode['in_process_tokens_per_s']:.1f} tok/s, over HTTP "
        f"{decode['http_tokens_per_s']:.1f} tok/s, ratio {decode['ratio_http_over_in_process']:.3f}"
    )
    ratios = [
        ratio("daemon SSE decode / in process", decode["ratio_http_over_in_process"], 0.95),
        ratio("429 p50 in a burst of 200, ms", burst["p50_429_ms"], burst["goal_p50_429_ms"], higher_is_better=False),
    ]
    write_results(
        "daemon",
        {
            "in_process_median_ms": in_process_ms,
            "http": rows,
            "daemon_rss_bytes": rss,
            "burst": burst,
            "decode": decode,
            "ratios": ratios,
        },
    )


if __name__ == "__main__":
    main()
