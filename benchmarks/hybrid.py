"""What hybrid routing costs: a request forwarded through the daemon vs the same request sent to the cloud directly,
and how fast a request fails once the circuit breaker is open.

    python benchmarks/hybrid.py [--samples 40]

The cloud is llama.cpp's own OpenAI-compatible server (`python -m llama_cpp.server`, SmolLM2-135M) on loopback;
the daemon (`edge-sdk serve --cloud-url ...`) runs as a separate process, as on a device, and each request
carries `X-Edge-Route: cloud`. Direct and forwarded requests alternate one by one so machine noise hits both
alike; p50/p99 of single requests, non-streaming (1 token) and streaming (time to the first byte and to the
end). Then a cloud that accepts connections but never answers: the first requests wait out the timeout, and
once the breaker is open the rest fail fast. Last, the router's own cost on a request served on the device
(a daemon with a cloud configured vs one without). Writes benchmarks/results/hybrid.json.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from _common import free_port, per_call, percentile, wait_ready, write_results  # benchmarks/ is on sys.path

BODY = {"model": "smollm2", "prompt": "The capital of France is", "max_tokens": 1, "temperature": 0}
STREAM_BODY = {**BODY, "max_tokens": 16, "stream": True}


def _quantiles(samples: list[float]) -> dict[str, float]:
    return {"p50_ms": percentile(samples, 50) * 1e3, "p99_ms": percentile(samples, 99) * 1e3}


def _paired(direct: Callable[[], object], routed: Callable[[], object], samples: int) -> dict:
    direct_s, routed_s = [], []
    for _ in range(samples):
        direct_s.append(per_call(direct, 1))
        routed_s.append(per_call(routed, 1))
    d, r = _quantiles(direct_s), _quantiles(routed_s)
    return {
        "samples": samples,
        "direct": d,
        "through_daemon": r,
        "added_p50_ms": r["p50_ms"] - d["p50_ms"],
        "added_p99_ms": r["p99_ms"] - d["p99_ms"],
        "ratio_direct_over_daemon_p50": d["p50_ms"] / r["p50_ms"],
    }


def _stream_times(client: httpx.Client, url: str, headers: dict[str, str]) -> tuple[float, float]:
    start = time.perf_counter()
    first = None
    with client.stream("POST", f"{url}/v1/completions", json=STREAM_BODY, headers=headers) as r:
        for _ in r.iter_bytes():
            first = first or time.perf_counter() - start
    return first or 0.0, time.perf_counter() - start


def measure_forwarding(upstream: str, daemon: str, samples: int) -> dict:
    cloud = {"X-Edge-Route": "cloud"}
    with httpx.Client(timeout=60) as client:

        def direct() -> None:
            client.post(f"{upstream}/v1/completions", json=BODY).raise_for_status()

        def routed() -> None:
            r = client.post(f"{daemon}/v1/completions", json=BODY, headers=cloud)
            r.raise_for_status()
            assert r.headers["x-edge-route"] == "cloud"

        for _ in range(3):  # warm both paths (connections, the model's first evaluation)
            direct(), routed()
        unary = _paired(direct, routed, samples)
        first_d, first_r, total_d, total_r = [], [], [], []
        for _ in range(max(10, samples // 2)):
            a, b = _stream_times(client, upstream, {}), _stream_times(client, daemon, cloud)
            first_d.append(a[0]), total_d.append(a[1]), first_r.append(b[0]), total_r.append(b[1])
    return {
        "non_streaming_1_token": unary,
        "streaming_16_tokens": {
            "samples": len(first_d),
            "first_byte_direct": _quantiles(first_d),
            "first_byte_through_daemon": _quantiles(first_r),
            "total_direct": _quantiles(total_d),
            "total_through_daemon": _quantiles(total_r),
        },
    }


def measure_local_routing(plain: str, routed: str, samples: int) -> dict:
    """The router's own cost on a request served on the device: a daemon without a cloud vs one with a cloud."""
    with httpx.Client(timeout=60) as client:

        def without() -> None:
            client.post(f"{plain}/v1/completions", json=BODY).raise_for_status()

        def with_router() -> None:
            r = client.post(f"{routed}/v1/completions", json=BODY)
            assert r.headers["x-edge-route"] == "local", r.headers
            r.raise_for_status()

        for _ in range(3):
            without(), with_router()
        return _paired(without, with_router, samples)


def measure_breaker(bundle: Path, samples: int, timeout_s: float = 0.5, failures: int = 3) -> dict:
    """A cloud that takes connections and never answers: timeouts until the breaker opens, then fail fast."""
    blackhole = socket.socket()
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(64)  # the kernel completes connections; nobody ever reads or answers
    cloud = f"http://127.0.0.1:{blackhole.getsockname()[1]}"
    port = free_port()
    daemon = _serve(bundle, port, "--cloud-url", cloud, "--cloud-timeout", str(timeout_s), "--cloud-retries", "0",
                    "--breaker-failures", str(failures), "--breaker-reset", "600")  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    body = {**BODY, "model": "not-on-this-device"}
    try:
        wait_ready(url, "/health/ready")
        with httpx.Client(timeout=30) as client:
            timed_out, fast = [], []
            for _ in range(failures):
                start = time.perf_counter()
                status = client.post(f"{url}/v1/completions", json=body).status_code
                timed_out.append((time.perf_counter() - start, status))
            for _ in range(samples):
                start = time.perf_counter()
                r = client.post(f"{url}/v1/completions", json=body)
                fast.append(time.perf_counter() - start)
                assert r.status_code == 503 and r.headers["x-edge-route-reason"] == "breaker_open", r.text
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
        blackhole.close()
    return {
        "cloud_timeout_s": timeout_s,
        "failures_to_open": failures,
        "before_open_ms": [t * 1e3 for t, _ in timed_out],
        "before_open_status": [s for _, s in timed_out],
        "open_fail_fast": {"samples": samples, **_quantiles(fast)},
    }


def _serve(bundle: Path, port: int, *flags: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "edge_sdk.cli", "serve", str(bundle), "--port", str(port), *flags]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=40)
    args = parser.parse_args()
    from converters.gguf.zoo import smollm2_as_shipped, smollm2_gguf_path

    with tempfile.TemporaryDirectory() as tmp:
        bundle = smollm2_as_shipped(Path(tmp) / "smollm2").root
        up_port, port = free_port(), free_port()
        upstream = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2_gguf_path()), "--model_alias",
             "smollm2", "--host", "127.0.0.1", "--port", str(up_port), "--n_threads", "2"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        up_url, url = f"http://127.0.0.1:{up_port}", f"http://127.0.0.1:{port}"
        daemon = _serve(bundle, port, "--cloud-url", up_url, "--threads", "2")
        plain_port = free_port()
        plain = _serve(bundle, plain_port, "--threads", "2")
        plain_url = f"http://127.0.0.1:{plain_port}"
        try:
            wait_ready(up_url, "/v1/models")
            wait_ready(url)
            wait_ready(plain_url)
            forwarding = measure_forwarding(up_url, url, args.samples)
            local = measure_local_routing(plain_url, url, args.samples)
        finally:
            for process in (plain, daemon, upstream):
                process.terminate()
                process.wait(timeout=30)
        breaker = measure_breaker(bundle, args.samples)

    unary, stream = forwarding["non_streaming_1_token"], forwarding["streaming_16_tokens"]
    print(f"{'':34} {'direct p50':>10} {'p99':>8} {'daemon p50':>10} {'p99':>8} {'added p50':>9} {'p99':>8}  ms")
    print(
        f"{'completion, 1 token':34} {unary['direct']['p50_ms']:>10.2f} {unary['direct']['p99_ms']:>8.2f} "
        f"{unary['through_daemon']['p50_ms']:>10.2f} {unary['through_daemon']['p99_ms']:>8.2f} "
        f"{unary['added_p50_ms']:>9.2f} {unary['added_p99_ms']:>8.2f}"
    )
    for label, d, r in (
        ("stream, first byte", stream["first_byte_direct"], stream["first_byte_through_daemon"]),
        ("stream, 16 tokens to the end", stream["total_direct"], stream["total_through_daemon"]),
    ):
        print(
            f"{label:34} {d['p50_ms']:>10.2f} {d['p99_ms']:>8.2f} {r['p50_ms']:>10.2f} {r['p99_ms']:>8.2f} "
            f"{r['p50_ms'] - d['p50_ms']:>9.2f} {r['p99_ms'] - d['p99_ms']:>8.2f}"
        )
    print(
        f"{'served locally, router on vs off':34} {local['direct']['p50_ms']:>10.2f} {local['direct']['p99_ms']:>8.2f} "
        f"{local['through_daemon']['p50_ms']:>10.2f} {local['through_daemon']['p99_ms']:>8.2f} "
        f"{local['added_p50_ms']:>9.2f} {local['added_p99_ms']:>8.2f}"
    )
    print(f"ratio direct/daemon (p50, 1 token): {unary['ratio_direct_over_daemon_p50']:.3f}")
    waits = ", ".join(f"{t:.0f}" for t in breaker["before_open_ms"])
    fast = breaker["open_fail_fast"]
    print(f"dead cloud: {waits} ms to fail while the breaker closes (timeout {breaker['cloud_timeout_s']} s); "
          f"breaker open: p50 {fast['p50_ms']:.2f} ms, p99 {fast['p99_ms']:.2f} ms to fail fast")  # fmt: skip
    write_results("hybrid", {**forwarding, "local_routing": local, "breaker": breaker})


if __name__ == "__main__":
    main()
