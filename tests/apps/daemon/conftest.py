"""A real uvicorn server on loopback, in a thread of the test process, serving real bundles."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
import uvicorn

from edge_sdk.apps.daemon.config import DaemonConfig
from edge_sdk.apps.daemon.pool import BundleSource, DirectorySource
from edge_sdk.apps.daemon.server import build


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running(source: BundleSource, **options) -> Iterator[str]:
    config = DaemonConfig(port=free_port(), **options)
    app = build(source, config)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=config.port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{config.port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health/live", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.05)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        app.state.pool.close()


@pytest.fixture(scope="session")
def serve_bundles():
    """`with serve_bundles(source, **DaemonConfig options) as url:` — a daemon for one test."""
    return running


@pytest.fixture(scope="module")
def tensor_daemon(onnx_bundle) -> Iterator[str]:
    with running(DirectorySource([onnx_bundle.root]), max_body_bytes=256 * 1024) as url:
        yield url


@pytest.fixture(scope="session")
def slow_bundle(tmp_path_factory):
    """Small input, ~0.1 s of compute a call: requests overlap in the daemon, so limits can be exercised."""
    import numpy as np
    import torch
    from torch import nn

    import edge_sdk

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Upsample(scale_factor=32),
        nn.Conv2d(1, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )
    x = np.random.default_rng(0).standard_normal((2, 1, 8, 8)).astype(np.float32)
    return edge_sdk.convert(model, {"input": x}, name="slow-net", output=tmp_path_factory.mktemp("slow") / "b")


@pytest.fixture(scope="session")
def smollm2_served_bundle(tmp_path_factory):
    """SmolLM2 as shipped (Q4_1): conversion and its quality gate are tested in tests/converters."""
    from converters.gguf.zoo import smollm2_as_shipped

    return smollm2_as_shipped(tmp_path_factory.mktemp("smollm2") / "b")


@pytest.fixture(scope="module")
def llm_daemon(smollm2_served_bundle, onnx_bundle) -> Iterator[str]:
    source = DirectorySource([smollm2_served_bundle.root, onnx_bundle.root])
    with running(source, concurrency_per_model=1, queue_per_model=4) as url:
        yield url
