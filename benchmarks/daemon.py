"""The daemon under load: the digits CNN over HTTP at 1, 4 and 16 concurrent clients vs the session in process.

    python benchmarks/daemon.py [--seconds 5]

Prints p50/p99 latency and throughput per concurrency, the in-process baseline, and the daemon's resident
memory; writes benchmarks/results/daemon.json. The daemon runs as a separate process on loopback, as on a
device. Then SmolLM2 decode speed: tokens/s streamed over HTTP (SSE) vs the same session in process
(goal >= 0.95), alternating runs, medians.
"""

from __future__ import annotations

import argparse
import json
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

import edge_sdk

RESULTS = Path(__file__).parent / "results"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
    q = statistics.quantiles(latencies, n=100)
    return {
        "clients": clients,
        "requests": len(latencies),
        "errors": errors,
        "p50_ms": q[49] * 1e3,
        "p99_ms": q[98] * 1e3,
        "throughput_rps": len(latencies) / seconds,
    }


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
    port = _port()
    daemon = subprocess.Popen(
        [sys.executable, "-m", "edge_sdk.cli", "serve", str(bundle.root), "--port", str(port), "--threads", "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    local, remote = [], []
    try:
        _wait(url)
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


def _wait(url: str, path: str = "/health/ready") -> None:
    for _ in range(300):
        try:
            if httpx.get(f"{url}{path}", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url}{path} did not answer within 30 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--decode-runs", type=int, default=5)
    parser.add_argument("--decode-tokens", type=int, default=128)
    args = parser.parse_args()
    from converters.zoo import digits_data

    x = digits_data().test_x[:1]
    body = {"inputs": {"input": {"dtype": "float32", "shape": list(x.shape), "data": x.ravel().tolist()}}}
    with tempfile.TemporaryDirectory() as tmp:
        bundle = edge_sdk.convert("zoo:digits-cnn", quantize="int8-static", output=Path(tmp) / "b")
        with edge_sdk.load(bundle) as session:
            times = []
            for _ in range(2000):
                start = time.perf_counter()
                session.run({"input": x})
                times.append(time.perf_counter() - start)
        port = _port()
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
            _wait(url)
            rows = [_load(f"{url}/v1/infer/digits-cnn", body, c, args.seconds) for c in (1, 4, 16)]
            rss = _rss(daemon.pid)
        finally:
            daemon.terminate()
            daemon.wait(timeout=30)
        decode = measure_decode(Path(tmp), args.decode_runs, args.decode_tokens)
    in_process_ms = statistics.median(times) * 1e3
    print(f"in process: median {in_process_ms:.3f} ms per call (batch 1)")
    print(f"{'clients':>7} {'requests':>8} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8} {'errors':>6}")
    for r in rows:
        print(
            f"{r['clients']:>7} {r['requests']:>8} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
            f"{r['throughput_rps']:>8.0f} {r['errors']:>6}"
        )
    print(f"daemon resident memory (digits CNN loaded): {rss / 2**20:.0f} MB")
    print(
        f"SmolLM2 decode: in process {decode['in_process_tokens_per_s']:.1f} tok/s, over HTTP "
        f"{decode['http_tokens_per_s']:.1f} tok/s, ratio {decode['ratio_http_over_in_process']:.3f}"
    )
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "daemon.json"
    out.write_text(
        json.dumps(
            {
                "machine": platform.platform(),
                "in_process_median_ms": in_process_ms,
                "http": rows,
                "daemon_rss_bytes": rss,
                "decode": decode,
            },
            indent=2,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
