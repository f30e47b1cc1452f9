"""`edge_sdk.install(...)` and `edge_sdk.serve(...)`: the store and the daemon from Python."""

from __future__ import annotations

import json
import shutil

import httpx
import numpy as np
import pytest

import edge_sdk
from edge_sdk.errors import ConfigError, StoreError


def test_install_then_serve_in_the_background(onnx_bundle, tmp_path):
    store = tmp_path / "store"
    installed = edge_sdk.install(onnx_bundle, store)  # golden sets re-run here
    assert (installed.name, installed.active) == ("digits-cnn", "1.0.0")
    x = np.zeros((1, 1, 8, 8), np.float32)
    body = {"inputs": {"input": {"dtype": "float32", "shape": [1, 1, 8, 8], "data": x.ravel().tolist()}}}
    with edge_sdk.serve(store=store, port=0, background=True, concurrency_per_model=1) as daemon:
        assert daemon.config.concurrency_per_model == 1
        assert [m["id"] for m in httpx.get(f"{daemon.url}/v1/models").json()["data"]] == ["digits-cnn"]
        reply = httpx.post(f"{daemon.url}/v1/infer/digits-cnn", json=body, timeout=30)
        assert reply.status_code == 200
        (output,) = reply.json()["outputs"].values()
        assert output["shape"] == [1, 10]
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{daemon.url}/health/live", timeout=2)  # stopped


def test_serve_refuses_what_the_daemon_would(onnx_bundle, tmp_path):
    with pytest.raises(ConfigError, match="bundle paths or store="):
        edge_sdk.serve()
    with pytest.raises(ConfigError, match="port"):
        edge_sdk.serve(onnx_bundle.root, port=70000, background=True)
    with pytest.raises(ConfigError, match="unknown_option"):
        edge_sdk.serve(onnx_bundle.root, unknown_option=1, background=True)


def test_install_refuses_a_variant_that_failed_its_gate(onnx_bundle, tmp_path):
    failed = tmp_path / "failed"
    shutil.copytree(onnx_bundle.root, failed)
    manifest = json.loads((failed / "manifest.json").read_text())
    manifest["variants"][0]["accuracy"]["passed"] = False
    (failed / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match="FAILED at conversion"):
        edge_sdk.install(failed, tmp_path / "store")
    assert edge_sdk.install(failed, tmp_path / "store", allow_failed=True).active == "1.0.0"
