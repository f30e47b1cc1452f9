"""Preloading: load the models the daemon serves as it starts, so `/health/ready` turns 200 only once they are
in memory and the first request does not pay the load.

Models are loaded in the order the source lists them, as long as each fits the memory budget and the machine's
free memory beside those already loaded (`ModelPool.fits_now`); one that does not fit, or fails to load, stays
on demand (as without preloading) and is named in the log and in `/health/ready`'s body. The listener is up
meanwhile: `/health/live` answers, `/health/ready` says "loading" with 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from edge_sdk.errors import EdgeSDKError

if TYPE_CHECKING:
    from fastapi import FastAPI

    from edge_sdk.apps.daemon.pool import ModelPool

log = logging.getLogger("edge_sdk.daemon")


class Preload:
    """The state `/health/ready` reads: whether preloading is still running, and what it left on demand."""

    def __init__(self, enabled: bool) -> None:
        self.pending = enabled  # true from the start, so no request can see "ready" before preloading begins
        self.loaded: list[str] = []
        self.on_demand: dict[str, str] = {}  # model -> why it was not preloaded
        self._when_done: list[Callable[[], None]] = []

    def describe(self) -> dict[str, Any]:
        return {"preloaded": self.loaded, "on_demand": self.on_demand}

    def when_done(self, callback: Callable[[], None]) -> None:
        """Call `callback` once preloading has ended (at once if it is not running)."""
        if self.pending:
            self._when_done.append(callback)
        else:
            callback()

    def finish(self) -> None:
        self.pending = False
        callbacks, self._when_done = self._when_done, []
        for callback in callbacks:
            callback()


async def preload(pool: ModelPool, state: Preload) -> None:
    try:
        for name in pool.source.names():
            try:
                size, _context = await asyncio.to_thread(pool.plan, name)
                if not pool.fits_now(name, size + sum(m.bytes for m in pool.loaded())):
                    state.on_demand[name] = f"needs {size} bytes beside the models already loaded: over the budget"
                    log.warning("not preloading %s: %s", name, state.on_demand[name])
                    continue
                await pool.ensure_loaded(name)
                state.loaded.append(name)
                log.info("preloaded %s", name)
            except EdgeSDKError as exc:  # a bundle that does not load: its requests will say why
                state.on_demand[name] = str(exc)
                log.warning("not preloading %s: %s", name, exc)
    finally:
        state.finish()


def add_preload(app: FastAPI, pool: ModelPool, enabled: bool) -> Preload:
    """Run `preload` alongside the app's lifespan (started before the first request, cancelled at shutdown)."""
    state = Preload(enabled)
    app.state.preload = state
    if not enabled:
        return state
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(a: FastAPI) -> AsyncIterator[Any]:
        task = asyncio.ensure_future(preload(pool, state))
        try:
            async with inner(a) as inner_state:
                yield inner_state
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    app.router.lifespan_context = lifespan
    return state
