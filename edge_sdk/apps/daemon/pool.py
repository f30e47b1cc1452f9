"""Loaded models: on-demand loading within a memory budget, LRU eviction, bounded concurrency and queue."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

from edge_sdk.apps.daemon.config import DaemonConfig
from edge_sdk.bundle import Bundle, Variant
from edge_sdk.errors import EdgeSDKError, OverloadedError, RuntimeFailure, UnknownModelError, choices
from edge_sdk.metrics import Metrics

if TYPE_CHECKING:
    from runtimes import Session, SessionOptions

T = TypeVar("T")


class BundleSource(Protocol):
    """Where the daemon finds bundles: a store of installed versions, or directories given at start."""

    def names(self) -> list[str]: ...

    def open(self, name: str) -> Bundle: ...

    def current_version(self, name: str) -> str | None:
        """The version `open` would return now (cheap: checked on every request to pick up updates)."""
        ...


class DirectorySource:
    """Bundles named by their manifest, from paths given on the command line."""

    def __init__(self, paths: list[Path]) -> None:
        self._paths: dict[str, Path] = {}
        self._versions: dict[str, str] = {}
        for path in paths:
            bundle = Bundle.open(path)
            self._paths[bundle.name] = path
            self._versions[bundle.name] = bundle.manifest.version

    def names(self) -> list[str]:
        return sorted(self._paths)

    def open(self, name: str) -> Bundle:
        return Bundle.open(self._paths[name])

    def current_version(self, name: str) -> str | None:
        return self._versions.get(name)


@dataclass
class LoadedModel:
    name: str
    bundle: Bundle
    variant: Variant
    session: Session
    bytes: int
    in_use: int = 0
    last_used: float = field(default_factory=time.monotonic)
    exclusive: asyncio.Lock = field(default_factory=asyncio.Lock)  # queues requests to a non-thread-safe engine
    # Held by the thread that calls the engine: a cancelled request's generation may still be finishing its
    # current token after the request is gone, and the next request must not enter the engine before it stops.
    engine_lock: threading.Lock = field(default_factory=threading.Lock)

    def engine(self) -> contextlib.AbstractContextManager[object]:
        return contextlib.nullcontext() if self.session.thread_safe else self.engine_lock

    def call(self, fn: Callable[[], T]) -> T:
        """Run `fn` (an engine call, in a worker thread) under the engine lock when the engine needs one."""
        with self.engine():
            return fn()


@dataclass
class _Gate:
    semaphore: asyncio.Semaphore
    waiting: int = 0
    running: int = 0


class ModelPool:
    def __init__(self, source: BundleSource, config: DaemonConfig, metrics: Metrics, budget_bytes: int) -> None:
        self.source = source
        self.config = config
        self.metrics = metrics
        self.budget_bytes = budget_bytes
        self._loaded: OrderedDict[str, LoadedModel] = OrderedDict()
        self._gates: dict[str, _Gate] = {}
        self._load_locks: dict[str, asyncio.Lock] = {}
        self._recent_latency: dict[str, float] = {}  # per model, a moving average of service time (s)
        self._plans: dict[str, tuple[str | None, int, int | None]] = {}  # name -> (version, bytes, context)
        self._retiring: list[LoadedModel] = []
        self.loading = 0  # models being loaded or swapped in right now (readiness is false meanwhile)

    def loaded(self) -> list[LoadedModel]:
        return list(self._loaded.values())

    def _check_known(self, name: str) -> None:
        known = self.source.names()
        if name not in known:
            raise UnknownModelError(f"model {name!r} is not installed here; installed: {choices(known) or 'none'}")

    def _admit(self, name: str) -> _Gate:
        gate = self._gates.setdefault(name, _Gate(asyncio.Semaphore(self.config.concurrency_per_model)))
        if gate.running + gate.waiting >= self.config.concurrency_per_model + self.config.queue_per_model:
            per_request = self._recent_latency.get(name, 1.0)
            retry = max(1.0, per_request * (gate.waiting + 1) / self.config.concurrency_per_model)
            self.metrics.inc("edge_rejected_total", model=name, reason="overloaded")
            raise OverloadedError(
                f"model {name!r} is busy: {gate.running} running and {gate.waiting} queued (limits "
                f"{self.config.concurrency_per_model} and {self.config.queue_per_model})",
                retry,
            )
        return gate

    @contextlib.asynccontextmanager
    async def use(self, name: str) -> AsyncIterator[LoadedModel]:
        """Admit (or 429 at once), wait for a slot, load if needed, and hold the model while in use."""
        self._check_known(name)
        gate = self._admit(name)
        gate.waiting += 1
        self._queue_gauge(name, gate)
        try:
            await gate.semaphore.acquire()
        finally:
            gate.waiting -= 1
        gate.running += 1
        self._queue_gauge(name, gate)
        start = time.monotonic()
        try:
            model = await self._ensure_loaded(name)
            model.in_use += 1
            try:
                if model.session.thread_safe:
                    yield model
                else:
                    async with model.exclusive:
                        yield model
            finally:
                model.in_use -= 1
                model.last_used = time.monotonic()
        finally:
            gate.running -= 1
            gate.semaphore.release()
            self._queue_gauge(name, gate)
            took, before = time.monotonic() - start, self._recent_latency.get(name)
            self._recent_latency[name] = took if before is None else 0.7 * before + 0.3 * took

    # --- what the router needs to know about the device, right now ---

    def resident(self, name: str) -> LoadedModel | None:
        """The loaded model of `name`, if it is the version the source has active."""
        model = self._loaded.get(name)
        if model is not None and model.bundle.manifest.version == self.source.current_version(name):
            return model
        return None

    def plan(self, name: str) -> tuple[int, int | None]:
        """Bytes `name` would take once loaded, and its context length; opens (verifies) the bundle once per
        version, so call it in a thread."""
        from runtimes import get_runtime

        version = self.source.current_version(name)
        cached = self._plans.get(name)
        if cached is None or cached[0] != version:
            bundle = self.source.open(name)
            variant = bundle.variant()
            size = self._footprint(variant, bundle.root)
            cached = self._plans[name] = (
                version,
                size,
                get_runtime(variant.backend).context_length(variant, self._session_options()),
            )
        return cached[1], cached[2]

    def _session_options(self) -> SessionOptions:
        from runtimes import SessionOptions

        return SessionOptions(
            threads=self.config.threads, context=self.config.context, chat_template=self.config.chat_template
        )

    def fits_now(self, name: str, size: int) -> bool:
        """Whether `size` bytes fit the budget beside the models that cannot be evicted now (in use), and the
        machine's free memory once the idle ones are evicted."""
        from device_profiles.host import available_memory_bytes

        busy = [m for m in [*self._loaded.values(), *self._retiring] if m.in_use and m.name != name]
        idle = sum(m.bytes for m in self._loaded.values() if not m.in_use and m.name != name)
        within_budget = size + sum(m.bytes for m in busy) <= self.budget_bytes
        return within_budget and size <= available_memory_bytes() + idle

    def estimated_wait_s(self, name: str) -> float:
        """Queue wait a new request would meet: the requests ahead of it × recent service time / slots."""
        gate = self._gates.get(name)
        slots = self.config.concurrency_per_model
        if gate is None or gate.running + gate.waiting < slots:
            return 0.0
        return self._recent_latency.get(name, 1.0) * (gate.waiting + 1) / slots

    def _queue_gauge(self, name: str, gate: _Gate) -> None:
        self.metrics.set("edge_queue_depth", gate.waiting, model=name)
        self.metrics.set("edge_requests_running", gate.running, model=name)

    async def _ensure_loaded(self, name: str) -> LoadedModel:
        lock = self._load_locks.setdefault(name, asyncio.Lock())
        async with lock:
            model = self._loaded.get(name)
            if model is not None and model.bundle.manifest.version == self.source.current_version(name):
                self._loaded.move_to_end(name)
                return model
            if model is not None:  # a new version was activated: in-flight requests keep the old session
                self._retire(self._loaded.pop(name))
            self.loading += 1
            try:
                model = await asyncio.to_thread(self._load, name)
            finally:
                self.loading -= 1
            self._evict_for(model.bytes)
            self._loaded[name] = model
            self.metrics.set("edge_models_loaded", len(self._loaded))
            return model

    def _footprint(self, variant: Variant, root: Path) -> int:
        """Bytes one more loaded model adds to this process: `edge-sdk fit`'s estimate (engine, weights with the
        engine's copies, KV cache at the served context, activations) less the Python process, paid once."""
        from device_profiles.estimate import ENGINE_OVERHEAD_BYTES, PROCESS_BYTES, ModelFacts, estimate_memory

        try:
            estimate = estimate_memory(ModelFacts.of_variant(variant, root), self.config.context)
        except EdgeSDKError:  # a header the estimate cannot read: loading it will say what is wrong
            return variant.size_bytes + ENGINE_OVERHEAD_BYTES.get(variant.backend, 0)
        return estimate.peak_bytes - PROCESS_BYTES

    def _load(self, name: str) -> LoadedModel:
        from runtimes import get_runtime

        bundle = self.source.open(name)
        variant = bundle.variant()
        start = time.monotonic()
        try:
            session = get_runtime(variant.backend).load(variant, bundle.root, self._session_options())
        except EdgeSDKError:
            raise
        except Exception as exc:  # an engine crash while loading must not take the daemon down
            raise RuntimeFailure(f"loading {name!r} ({variant.id}) failed: {type(exc).__name__}: {exc}") from exc
        self.metrics.observe("edge_model_load_seconds", time.monotonic() - start, model=name)
        return LoadedModel(name, bundle, variant, session, self._footprint(variant, bundle.root))

    def _evict_for(self, incoming: int) -> None:
        """Unload least recently used idle models until `incoming` fits the budget."""
        used = sum(m.bytes for m in self._loaded.values())
        for name in list(self._loaded):
            if used + incoming <= self.budget_bytes:
                break
            model = self._loaded[name]
            if model.in_use:
                continue
            model.session.close()
            del self._loaded[name]
            used -= model.bytes
            self.metrics.inc("edge_model_evictions_total", model=name)
        self.metrics.set("edge_models_loaded", len(self._loaded))

    def _retire(self, model: LoadedModel) -> None:
        """Close a replaced session once its last in-flight request is done."""
        self._retiring.append(model)
        still_busy = []
        for old in self._retiring:
            if old.in_use:
                still_busy.append(old)
            else:
                old.session.close()
        self._retiring = still_busy

    def close(self) -> None:
        for model in self._loaded.values():
            model.session.close()
        self._loaded.clear()
