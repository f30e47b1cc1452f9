"""Preloading: the daemon loads what it serves at start, and says ready only once it has.

A load is held back by a source whose `open` waits for the test's go-ahead, so "not ready while loading" is seen
without depending on how fast the machine loads a model.
"""

from __future__ import annotations

import threading
import time

import httpx

from edge_sdk.apps.daemon.pool import DirectorySource
from edge_sdk.bundle import Bundle


class HeldSource(DirectorySource):
    """Bundles that cannot be opened (so not planned or loaded) until `release` is set."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.release = threading.Event()

    def open(self, name: str) -> Bundle:
        assert self.release.wait(timeout=60), "the test never released the source"
        return super().open(name)


def _wait_for_status(url: str, status: int, timeout_s: float = 60) -> httpx.Response:
    deadline = time.monotonic() + timeout_s
    while True:
        r = httpx.get(f"{url}/health/ready", timeout=10)
        if r.status_code == status or time.monotonic() > deadline:
            return r
        time.sleep(0.05)


def test_ready_only_once_the_served_model_is_loaded(onnx_bundle, serve_bundles):
    source = HeldSource([onnx_bundle.root])
    with serve_bundles(source) as url:
        assert httpx.get(f"{url}/health/live").status_code == 200  # up, answering
        held = httpx.get(f"{url}/health/ready")
        assert held.status_code == 503 and held.json()["state"] == "loading"
        source.release.set()
        ready = _wait_for_status(url, 200)
        assert ready.status_code == 200, ready.text
        assert ready.json()["preloaded"] == ["digits-cnn"] and ready.json()["on_demand"] == {}
        (entry,) = httpx.get(f"{url}/v1/models").json()["data"]
        assert entry["loaded"] is True  # ready meant loaded: the first request does not pay the load


def test_without_preload_ready_at_once_and_the_model_loads_on_demand(onnx_bundle, serve_bundles):
    with serve_bundles(DirectorySource([onnx_bundle.root]), preload=False) as url:
        ready = httpx.get(f"{url}/health/ready")
        assert ready.status_code == 200 and ready.json()["preloaded"] == []
        (entry,) = httpx.get(f"{url}/v1/models").json()["data"]
        assert entry["loaded"] is False


def test_a_model_over_the_budget_is_left_on_demand_and_named(onnx_bundle, serve_bundles, sample):
    with serve_bundles(DirectorySource([onnx_bundle.root]), memory_budget_bytes=1) as url:
        ready = _wait_for_status(url, 200)
        assert ready.status_code == 200, ready.text
        assert ready.json()["preloaded"] == []
        assert "over the budget" in ready.json()["on_demand"]["digits-cnn"]
        (entry,) = httpx.get(f"{url}/v1/models").json()["data"]
        assert entry["loaded"] is False


def test_what_waits_for_the_preload_runs_once_it_ends():
    # `serve` pauses the cyclic garbage collector while it starts and resumes it here: a callback registered
    # while preloading runs once, when preloading ends; one registered later (or without preloading), at once.
    from edge_sdk.apps.daemon.preload import Preload

    calls: list[str] = []
    preloading = Preload(enabled=True)
    preloading.when_done(lambda: calls.append("early"))
    assert calls == []
    preloading.finish()
    preloading.when_done(lambda: calls.append("late"))
    Preload(enabled=False).when_done(lambda: calls.append("no preload"))
    preloading.finish()
    assert calls == ["early", "late", "no preload"]


def _started_early(source: DirectorySource) -> tuple[list[str], object]:
    """`serve`'s start without the web stack: plan and begin loading at once, then register as the preload does.
    Returns the threads the engine loads ran in, and the model the preload got."""
    import asyncio

    from edge_sdk.apps.daemon.config import DaemonConfig
    from edge_sdk.apps.daemon.server import new_pool

    pool = new_pool(source, DaemonConfig())
    threads: list[str] = []
    load = pool._load
    pool._load = lambda name: threads.append(threading.current_thread().name) or load(name)  # type: ignore[method-assign]
    try:
        pool.start_early(source.names())
        model = asyncio.run(pool.ensure_loaded("digits-cnn"))
        return threads, model
    finally:
        pool.close()


def test_a_model_begun_early_loads_beside_the_caller_and_is_the_one_registered(onnx_bundle, sample):
    threads, model = _started_early(DirectorySource([onnx_bundle.root]))
    assert threads == ["early-load"]  # planned here, loaded in its own thread, and not loaded twice
    assert model.session.run(sample)  # type: ignore[attr-defined]


def test_an_engine_that_fails_to_import_early_is_loaded_by_the_preload_instead(onnx_bundle, sample, monkeypatch):
    # A half-installed engine must not break the start: the preload's own load reports what is wrong, or loads.
    from runtimes.onnxruntime_adapter import OnnxRuntime

    def broken(self, variant):
        raise ImportError("simulated: the engine's import failed")

    monkeypatch.setattr(OnnxRuntime, "import_engine", broken)
    threads, model = _started_early(DirectorySource([onnx_bundle.root]))
    assert len(threads) == 1 and threads[0] != "early-load"
    assert model.session.run(sample)  # type: ignore[attr-defined]
