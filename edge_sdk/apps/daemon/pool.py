"""Loaded models: on-demand loading within a memory budget, LRU eviction, bounded concurrency and queue."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from device_profiles.choice import Choice
from edge_sdk.apps.daemon.config import DaemonConfig
from edge_sdk.apps.daemon.loaded import BundleSource, DirectorySource, LoadedModel
from edge_sdk.bundle import Bundle, Variant
from edge_sdk.errors import (
    EdgeSDKError,
    OverloadedError,
    RequestAbandonedError,
    RuntimeFailure,
    UnknownModelError,
    choices,
)
from edge_sdk.metrics import Metrics

if TYPE_CHECKING:
    from device_profiles import DeviceProfile
    from runtimes import SessionOptions

__all__ = ["BundleSource", "DirectorySource", "LoadedModel", "ModelPool", "Reservation"]

CLOSE_WAIT_S = 30.0  # longest wait for an engine call to finish before its session is closed anyway


@dataclass
class Reservation:
    """A place in a model's queue, taken when a request arrived (ModelPool.reserve)."""

    gate: _Gate | None
    name: str = ""


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
        self._load_tasks: dict[str, asyncio.Future[LoadedModel]] = {}
        self._recent_latency: dict[str, float] = {}  # per model, a moving average of service time (s)
        self._plans: dict[str, tuple[str | None, int, int | None]] = {}  # name -> (version, bytes, context)
        self._choices: dict[str, tuple[str | None, Choice]] = {}  # name -> (version, variant chosen)
        self._profile: DeviceProfile | None = None
        self._retiring: list[LoadedModel] = []
        self.loading = 0  # models being loaded or swapped in right now (readiness is false meanwhile)
        # Loads begun in a thread before the event loop runs (`start_early`); the first `ensure_loaded` takes each
        # (None: it did not fit, load it as usual).
        self._early: dict[str, concurrent.futures.Future[LoadedModel | None]] = {}

    def loaded(self) -> list[LoadedModel]:
        return list(self._loaded.values())

    def check_known(self, name: str) -> None:
        known = self.source.names()
        if name not in known:
            if name in self._loaded:  # removed from the store: its memory is freed once its last request is done
                self._retire(self._loaded.pop(name))
                self.metrics.set("edge_models_loaded", len(self._loaded))
            raise UnknownModelError(f"model {name!r} is not installed here; installed: {choices(known) or 'none'}")

    def refuse_if_full(self, name: str) -> None:
        """OverloadedError (429) when `name`'s slots and queue are all taken: cheap, so the daemon asks it before
        reading a request's body, and a burst is refused at once instead of after every body is parsed."""
        gate = self._gates.get(name)
        if (
            gate is not None
            and gate.running + gate.waiting >= self.config.concurrency_per_model + self.config.queue_per_model
        ):
            per_request = self._recent_latency.get(name, 1.0)
            retry = max(1.0, per_request * (gate.waiting + 1) / self.config.concurrency_per_model)
            self.metrics.inc("edge_rejected_total", model=name, reason="overloaded")
            raise OverloadedError(
                f"model {name!r} is busy: {gate.running} running and {gate.waiting} queued (limits "
                f"{self.config.concurrency_per_model} and {self.config.queue_per_model})",
                retry,
            )

    def _admit(self, name: str) -> _Gate:
        self.refuse_if_full(name)
        return self._gates.setdefault(name, _Gate(asyncio.Semaphore(self.config.concurrency_per_model)))

    def reserve(self, name: str) -> Reservation:
        """A place in `name`'s queue taken now, as a request arrives and before its body is read (429 when
        full): a burst is counted, and refused, before any of it is parsed. `use(..., reservation)` takes the
        place over; `release` gives back one that was not used (the request failed before `use`)."""
        if name not in self.source.names():
            return Reservation(None)  # the route answers 404; no queue is made for a name nobody serves
        gate = self._admit(name)
        gate.waiting += 1
        self._queue_gauge(name, gate)
        return Reservation(gate, name)

    def release(self, reservation: Reservation) -> None:
        if reservation.gate is not None:
            reservation.gate.waiting -= 1
            self._queue_gauge(reservation.name, reservation.gate)
            reservation.gate = None

    @contextlib.asynccontextmanager
    async def use(
        self,
        name: str,
        gone: Callable[[], Awaitable[bool]] | None = None,
        reservation: Reservation | None = None,
        *,
        purpose: str = "generate",
    ) -> AsyncIterator[LoadedModel]:
        """Admit (or 429 at once), wait for a slot, load if needed, and hold the model while in use.

        `gone` (the request's `is_disconnected`) is asked once the slot is free: a client that left while it
        waited gets nothing started for it. A `purpose` for which the engine opens another instance (llama.cpp's
        embeddings) is counted in the budget first.
        """
        self.check_known(name)
        if reservation is not None and reservation.gate is not None and reservation.name == name:
            gate, reservation.gate = reservation.gate, None  # already counted as waiting
        else:
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
            if gone is not None and await gone():
                self.metrics.inc("edge_abandoned_total", model=name)
                raise RequestAbandonedError(f"the client of a {name!r} request left while it waited: not started")
            model = await self._ensure_loaded(name)
            model.in_use += 1
            try:
                await self._count_instance(model, purpose)
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
        version: off the event loop (the preload calls it in a thread; `start_early`, before the loop runs)."""
        from runtimes import get_runtime

        version = self.source.current_version(name)
        cached = self._plans.get(name)
        if cached is None or cached[0] != version:
            bundle = self.source.open(name)
            variant = self._choose(name, bundle).variant
            size = self._footprint(variant, bundle.root)
            cached = self._plans[name] = (
                version,
                size,
                get_runtime(variant.backend).context_length(variant, self._session_options()),
            )
        return cached[1], cached[2]

    def choice(self, name: str) -> Choice:
        """The variant `name` runs (or will run once loaded) and why; opens the bundle, so call it in a thread."""
        loaded = self.resident(name)
        if loaded is not None:
            return Choice(loaded.variant, loaded.reason)
        cached = self._choices.get(name)
        if cached is not None and cached[0] == self.source.current_version(name):
            return cached[1]  # without opening (verifying) the bundle again on every /v1/models
        return self._choose(name, self.source.open(name))

    def _choose(self, name: str, bundle: Bundle) -> Choice:
        from device_profiles import load_profile
        from device_profiles.choice import choose_variant

        version = bundle.manifest.version
        cached = self._choices.get(name)
        if cached is not None and cached[0] == version:
            return cached[1]
        if self._profile is None:
            self._profile = load_profile(self.config.profile or "host")
        pinned = self.config.variants.get(name) or self.config.variants.get("*") or self.source.pinned_variant(name)
        choice = choose_variant(bundle, self._profile, context=self.config.context, pinned=pinned)
        self._choices[name] = (version, choice)
        return choice

    async def _count_instance(self, model: LoadedModel, purpose: str) -> None:
        """Before the engine opens another instance for `purpose`, make room for it as for a model."""
        if purpose in model.instances:
            return
        extra = model.session.instance_bytes(purpose)
        async with self._load_locks.setdefault(model.name, asyncio.Lock()):
            if purpose in model.instances:
                return
            if extra:
                self._evict_for(extra, keep=model)
                model.bytes += extra
            model.instances.add(purpose)

    def _session_options(self) -> SessionOptions:
        from runtimes import SessionOptions

        return SessionOptions(
            threads=self.config.threads, context=self.config.context, chat_template=self.config.chat_template,
            prompt_cache_mb=self.config.prompt_cache_mb, speculative=self.config.speculative,
            draft_tokens=self.config.draft_tokens,
        )  # fmt: skip

    def fits_now(self, name: str, size: int) -> bool:
        """Whether `size` bytes fit the budget beside the models that cannot be evicted now (in use), and the
        machine's free memory once the idle ones are evicted."""
        from device_profiles.host import available_memory_bytes

        busy = [m for m in [*self._loaded.values(), *self._retiring] if m.in_use and m.name != name]
        idle = sum(m.bytes for m in self._loaded.values() if not m.in_use and m.name != name)
        within_budget = size + sum(m.bytes for m in busy) <= self.budget_bytes
        return within_budget and size <= available_memory_bytes() + idle

    def instance_fits(self, model: LoadedModel, purpose: str) -> bool:
        """Whether the extra engine instance `purpose` needs (llama.cpp's embeddings) fits now beside the model."""
        if purpose in model.instances:
            return True
        extra = model.session.instance_bytes(purpose)
        return not extra or self.fits_now(model.name, model.bytes + extra)

    def queue_state(self, name: str) -> tuple[int, int]:
        """(running, waiting): `name`'s requests in the engine and in its queue now."""
        gate = self._gates.get(name)
        return (gate.running, gate.waiting) if gate is not None else (0, 0)

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

    async def ensure_loaded(self, name: str) -> LoadedModel:
        """`name`'s model, loaded now unless it is already (how the daemon preloads at start)."""
        return await self._ensure_loaded(name)

    async def _ensure_loaded(self, name: str) -> LoadedModel:
        lock = self._load_locks.setdefault(name, asyncio.Lock())
        async with lock:
            model = self._loaded.get(name)
            if model is not None and model.bundle.manifest.version == self.source.current_version(name):
                self._loaded.move_to_end(name)
                return model
            task = self._load_tasks.get(name)
            if task is None:
                if model is not None:  # a new version was activated: in-flight requests keep the old session
                    self._retire(self._loaded.pop(name))
                task = self._load_tasks[name] = asyncio.ensure_future(self._load_and_register(name))
                task.add_done_callback(lambda _done: self._load_tasks.pop(name, None))
        # Shielded: a request that times out while the model loads does not waste the load (the next one uses it).
        return await asyncio.shield(task)

    def start_early(self, names: list[str]) -> None:
        """Begin loading `names` before the web stack is even imported; the lifespan's preload registers each as it
        would load it. Only models that fit beside those begun before are begun; the preload decides again for the
        rest.

        Each model is planned (its bundle opened, its variant chosen and sized) and its engine imported here, in the
        caller's thread; only the engine's load runs in a thread of its own. Loading is native code that releases
        the GIL, so it overlaps importing the web stack; planning and importing are Python, and in the loading
        thread they competed with that import for the GIL: the load began ~0.2 s later and the start waited for
        it. A store version whose stamp no longer matches is hashed here, before the listener is up (bundle
        directories are hashed before that anyway, when the source opens them)."""
        from runtimes import get_runtime

        futures = {name: concurrent.futures.Future[LoadedModel | None]() for name in names}
        self._early.update(futures)  # before any load begins: no load of these can begin twice
        begun: list[str] = []
        planned = 0
        for name, future in futures.items():
            try:
                size, _context = self.plan(name)
                variant = self.choice(name).variant
                fits = self.fits_now(name, size + planned)
            except Exception as exc:  # handed to whoever registers the load: it raises there
                future.set_exception(exc)
                continue
            if not fits:
                future.set_result(None)  # not begun: the preload decides again
                continue
            try:
                get_runtime(variant.backend).import_engine(variant)
            except Exception:  # a broken engine install: loading it on demand says what is wrong with it
                future.set_result(None)
                continue
            planned += size
            begun.append(name)

        def load_all() -> None:
            for name in begun:
                try:
                    futures[name].set_result(self._load(name))
                except BaseException as exc:  # as above
                    futures[name].set_exception(exc)

        if begun:
            threading.Thread(target=load_all, name="early-load", daemon=True).start()

    async def _load_and_register(self, name: str) -> LoadedModel:
        self.loading += 1
        try:
            early = self._early.pop(name, None)
            model = await asyncio.wrap_future(early) if early is not None else None
            if model is None:
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
        from runtimes.text import with_preprocessing

        bundle = self.source.open(name)
        choice = self._choose(name, bundle)
        variant = choice.variant
        start = time.monotonic()
        try:
            session = get_runtime(variant.backend).load(variant, bundle.root, self._session_options())
            session = with_preprocessing(session, bundle)  # text in, when the bundle carries a tokenizer
        except EdgeSDKError:
            raise
        except Exception as exc:  # an engine crash while loading must not take the daemon down
            raise RuntimeFailure(f"loading {name!r} ({variant.id}) failed: {type(exc).__name__}: {exc}") from exc
        self.metrics.observe("edge_model_load_seconds", time.monotonic() - start, model=name)
        return LoadedModel(name, bundle, variant, session, self._footprint(variant, bundle.root), choice.reason)

    def _evict_for(self, incoming: int, keep: LoadedModel | None = None) -> None:
        """Unload least recently used idle models (not `keep`) until `incoming` fits the budget."""
        used = sum(m.bytes for m in self._loaded.values())
        for name in list(self._loaded):
            if used + incoming <= self.budget_bytes:
                break
            model = self._loaded[name]
            # a timed-out request's engine call may still run
            if model.in_use or model is keep or model.engine_lock.locked():
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
            if old.in_use or old.engine_lock.locked():
                still_busy.append(old)
            else:
                old.session.close()
        self._retiring = still_busy

    def close(self) -> None:
        """Close every session, each after its engine call in progress (if any) finishes: closing under a running
        call crashes llama.cpp, and a request that timed out may have left one running for a token or a batch."""
        for model in [*self._loaded.values(), *self._retiring]:
            acquired = model.engine_lock.acquire(timeout=CLOSE_WAIT_S)
            try:
                model.session.close()
            finally:
                if acquired:
                    model.engine_lock.release()
        self._loaded.clear()
        self._retiring.clear()
