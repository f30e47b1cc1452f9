"""The daemon serving a store notices `edge-sdk activate` and `edge-sdk models rm` from its next request."""

from __future__ import annotations

import concurrent.futures
import re
import time
from pathlib import Path

import httpx
import numpy as np
from store_versions import invoke, versioned  # tests/: beside conftest.py


def _tensor(array: np.ndarray) -> dict:
    return {"dtype": str(array.dtype), "shape": list(array.shape), "data": array.ravel().tolist()}


def _running(url: str, model: str) -> float:
    match = re.search(rf'edge_requests_running{{model="{model}"}} (\S+)', httpx.get(f"{url}/metrics").text)
    return float(match.group(1)) if match else 0.0


def test_a_daemon_serving_the_store_notices_activate_and_rm(slow_bundle, serve_bundles, tmp_path):
    """An activation while a request runs: that request finishes (200) and the next one loads the new
    version; a removed model is 404 from the next request."""
    from edge_sdk.apps.daemon.store_source import StoreSource

    store = str(tmp_path / "store")
    for version in ("1.0.0", "2.0.0"):
        bundle = versioned(slow_bundle.root, version, tmp_path)
        assert invoke("install", str(bundle), "--store", store, "--no-check", "--no-activate").exit_code == 0
    assert invoke("activate", "slow-net", "1.0.0", "--store", store).exit_code == 0
    batch = {"inputs": {"input": _tensor(np.zeros((16, 1, 8, 8), np.float32))}}  # ~1 s of compute
    with serve_bundles(StoreSource(Path(store))) as url, concurrent.futures.ThreadPoolExecutor(1) as pool:
        assert httpx.post(f"{url}/v1/infer/slow-net", json=batch, timeout=60).status_code == 200  # 1.0.0 loaded
        in_flight = pool.submit(httpx.post, f"{url}/v1/infer/slow-net", json=batch, timeout=60)
        deadline = time.monotonic() + 30
        while _running(url, "slow-net") < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _running(url, "slow-net") == 1, "the request never started"
        assert invoke("activate", "slow-net", "2.0.0", "--store", store).exit_code == 0
        assert in_flight.result().status_code == 200, "the in-flight request did not finish on the old version"
        assert httpx.post(f"{url}/v1/infer/slow-net", json=batch, timeout=60).status_code == 200
        loads = re.search(r'edge_model_load_seconds_count{model="slow-net"} (\S+)', httpx.get(f"{url}/metrics").text)
        assert loads is not None and float(loads.group(1)) == 2, "2.0.0 was not loaded by the next request"
        assert invoke("models", "rm", "slow-net", "--store", store).exit_code == 0
        gone = httpx.post(f"{url}/v1/infer/slow-net", json=batch, timeout=60)
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "model_not_found"
        assert "slow-net" not in [m["id"] for m in httpx.get(f"{url}/v1/models").json()["data"]]
