"""A schema-1 bundle written by the previous release (tests/data/v1_bundle) installs with the CLI and serves."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np

V1 = Path(__file__).parents[2] / "data" / "v1_bundle"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_sdk.cli", *args], capture_output=True, text=True, timeout=300)


def test_a_v1_bundle_installs_and_serves(tmp_path, serve_bundles):
    from edge_sdk.apps.daemon.store_source import StoreSource

    store = tmp_path / "store"
    copy = shutil.copytree(V1 / "tiny-mlp-v1-signed", tmp_path / "b")
    done = _cli("install", str(copy), "--store", str(store), "--trust", str(V1 / "release.key.pub"))
    assert done.returncode == 0, done.stdout + done.stderr
    x = np.random.default_rng(1).standard_normal((3, 8)).astype(np.float32)
    with serve_bundles(StoreSource(store)) as url:
        body = {"inputs": {"input": {"dtype": "float32", "shape": [3, 8], "data": x.reshape(-1).tolist()}}}
        r = httpx.post(f"{url}/v1/infer/tiny-mlp-v1", json=body, timeout=30)
    assert r.status_code == 200, r.text
    out = np.array(r.json()["outputs"]["output"]["data"], np.float32).reshape(3, 4)
    import onnxruntime as ort

    direct = ort.InferenceSession(str(V1 / "tiny-mlp-v1" / "variants/onnx-none/model.onnx"))
    np.testing.assert_allclose(out, direct.run(None, {"input": x})[0], rtol=1e-5, atol=1e-6)
