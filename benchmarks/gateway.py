"""The cloud gateway's own cost: pass-through latency vs calling the upstream directly, and registry downloads.

    python benchmarks/gateway.py [--requests 40]

An upstream `python -m llama_cpp.server` (SmolLM2) and `edge-sdk cloud serve` in front of it, both separate
processes on loopback. Requests alternate between the gateway and the upstream so that noise hits both alike:
p50/p99 of a one-token chat completion, and of the time to the first SSE event of a streamed one; the
difference is what authenticating the device and relaying cost. Then a registry download of the SmolLM2
bundle (98 MB) through `edge-sdk sync`'s client vs reading the same file from disk, both sha256-checked. Writes
benchmarks/results/gateway.json.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from _common import free_port, percentile, wait_ready, write_results  # benchmarks/ is on sys.path as a script

DEVICE_KEY = "bench-device-key-000000"
PUBLISHER_KEY = "bench-publisher-key-0000"
BODY = {"model": "smollm2", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1, "temperature": 0}


def _percentiles(samples: list[float]) -> dict[str, float]:
    return {"p50_ms": percentile(samples, 50) * 1e3, "p99_ms": percentile(samples, 99) * 1e3}


def _latencies(urls: dict[str, str], headers: dict[str, dict[str, str]], requests: int) -> dict[str, dict]:
    full: dict[str, list[float]] = {name: [] for name in urls}
    first_event: dict[str, list[float]] = {name: [] for name in urls}
    clients = {name: httpx.Client(headers=headers[name], timeout=60) for name in urls}
    try:
        for _ in range(requests):
            for name, url in urls.items():  # alternate, request by request
                start = time.perf_counter()
                assert clients[name].post(f"{url}/v1/chat/completions", json=BODY).status_code == 200
                full[name].append(time.perf_counter() - start)
                start = time.perf_counter()
                body = {**BODY, "max_tokens": 4, "stream": True}
                with clients[name].stream("POST", f"{url}/v1/chat/completions", json=body) as response:
                    lines = response.iter_lines()
                    next(line for line in lines if line.startswith("data: "))
                    first_event[name].append(time.perf_counter() - start)
                    for _ in lines:  # to the end: the next request must not wait for this one's leftovers
                        pass
    finally:
        for client in clients.values():
            client.close()
    return {
        name: {"completion": _percentiles(full[name]), "first_event": _percentiles(first_event[name])} for name in urls
    }


def _download(gateway: str, packed: Path, tmp: Path, runs: int) -> dict[str, float]:
    from cloud_sync.sync import RegistryClient
    from edge_sdk.bundle.files import sha256_file

    with RegistryClient(gateway, api_key=PUBLISHER_KEY, timeout=600) as client:
        client.publish(packed)
        (entry,) = client.list()
        http, disk = [], []
        for i in range(runs):
            start = time.perf_counter()
            client.download(entry, tmp / f"dl-{i}.part")  # includes the sha256 check, as sync does
            http.append(time.perf_counter() - start)
            (tmp / f"dl-{i}.part").unlink()
            start = time.perf_counter()
            sha256_file(packed)  # the same file from local disk, digest checked: what HTTP adds is the rest
            disk.append(time.perf_counter() - start)
    mb = entry.size / 2**20
    return {
        "bundle_mb": mb,
        "http_mb_per_s": mb / statistics.median(http),
        "disk_sha256_mb_per_s": mb / statistics.median(disk),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--download-runs", type=int, default=3)
    args = parser.parse_args()
    from converters.gguf.zoo import smollm2_as_shipped, smollm2_gguf_path

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "devices").write_text(f"bench {DEVICE_KEY}\n")
        (tmp / "publishers").write_text(f"bench-ci {PUBLISHER_KEY}\n")
        up_port, gw_port = free_port(), free_port()
        upstream = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2_gguf_path()), "--model_alias",
             "smollm2", "--host", "127.0.0.1", "--port", str(up_port), "--n_ctx", "512", "--verbose", "False"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        upstream_url = f"http://127.0.0.1:{up_port}"
        gateway = subprocess.Popen(
            [sys.executable, "-m", "edge_sdk.cli", "cloud", "serve", "--device-keys", str(tmp / "devices"),
             "--publisher-keys", str(tmp / "publishers"), "--registry", str(tmp / "registry"),
             "--upstream", upstream_url, "--port", str(gw_port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        gateway_url = f"http://127.0.0.1:{gw_port}"
        try:
            wait_ready(upstream_url, "/v1/models", process=upstream)
            wait_ready(gateway_url, "/v1/models", headers={"Authorization": f"Bearer {DEVICE_KEY}"}, process=gateway)
            urls = {"direct": upstream_url, "gateway": gateway_url}
            headers = {"direct": {}, "gateway": {"Authorization": f"Bearer {DEVICE_KEY}"}}
            _latencies(urls, headers, 3)  # warm both paths
            latency = _latencies(urls, headers, args.requests)
            packed = smollm2_as_shipped(tmp / "smollm2").pack(tmp / "smollm2")
            download = _download(gateway_url, packed, tmp, args.download_runs)
        finally:
            for proc in (gateway, upstream):
                proc.terminate()
                proc.wait(timeout=30)

    print(f"{'path':<8} {'what':<12} {'p50 ms':>8} {'p99 ms':>8}")
    for name, rows in latency.items():
        for what, row in rows.items():
            print(f"{name:<8} {what:<12} {row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f}")
    added = {what: latency["gateway"][what]["p50_ms"] - latency["direct"][what]["p50_ms"] for what in latency["direct"]}
    print(
        f"added by the gateway at p50: {added['completion']:.2f} ms a completion, "
        f"{added['first_event']:.2f} ms to the first SSE event"
    )
    print(
        f"registry download of {download['bundle_mb']:.0f} MB: {download['http_mb_per_s']:.0f} MB/s over HTTP "
        f"vs {download['disk_sha256_mb_per_s']:.0f} MB/s reading it from disk, both sha256-checked "
        f"(ratio {download['http_mb_per_s'] / download['disk_sha256_mb_per_s']:.2f})"
    )
    write_results(
        "gateway", {"requests": args.requests, "latency": latency, "added_p50_ms": added, "download": download}
    )


if __name__ == "__main__":
    main()
