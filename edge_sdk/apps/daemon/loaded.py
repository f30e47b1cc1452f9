"""What the daemon's pool works with: where bundles come from (BundleSource, DirectorySource) and a model
loaded in an engine (LoadedModel). Split from pool.py; pool.py re-exports them."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

from edge_sdk.bundle import Bundle, Variant

if TYPE_CHECKING:
    from runtimes import Session

T = TypeVar("T")


class BundleSource(Protocol):
    """Where the daemon finds bundles: a store of installed versions, or directories given at start."""

    def names(self) -> list[str]: ...

    def open(self, name: str) -> Bundle: ...

    def current_version(self, name: str) -> str | None:
        """The version `open` would return now (cheap: checked on every request to pick up updates)."""
        ...

    def pinned_variant(self, name: str) -> str | None:
        """The variant an operator chose for the version `open` returns (`install --variant`); None: choose."""
        ...


class DirectorySource:
    """Bundles named by their manifest, from paths given on the command line. Each is opened (every file's
    digest checked, an archive unpacked) once, at start: the daemon then serves what it verified, and neither
    planning nor loading pays for hashing or unpacking a large model file again. A directory's digests are not
    computed again at the next start while its stamp (in the user's cache) shows no file changed since."""

    def __init__(self, paths: list[Path]) -> None:
        from edge_sdk.bundle.stamp import cached_stamp_path

        self._bundles: dict[str, Bundle] = {}
        for path in paths:
            bundle = Bundle.open(path, stamp=cached_stamp_path(path) if Path(path).is_dir() else None)
            self._bundles[bundle.name] = bundle

    def names(self) -> list[str]:
        return sorted(self._bundles)

    def open(self, name: str) -> Bundle:
        return self._bundles[name]

    def current_version(self, name: str) -> str | None:
        bundle = self._bundles.get(name)
        return bundle.manifest.version if bundle is not None else None

    def pinned_variant(self, name: str) -> str | None:
        return None


@dataclass
class LoadedModel:
    name: str
    bundle: Bundle
    variant: Variant
    session: Session
    bytes: int
    reason: str = ""  # why this variant (device_profiles.choice)
    instances: set[str] = field(default_factory=set)  # extra engine instances counted in `bytes` (embed, ...)
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
