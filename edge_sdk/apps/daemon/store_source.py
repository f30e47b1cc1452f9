"""Serve what an install store has active; a newly activated version is picked up on the next request."""

from __future__ import annotations

from pathlib import Path

from edge_sdk.bundle import Bundle
from edge_sdk.store import BundleStore


class StoreSource:
    def __init__(self, root: Path) -> None:
        self.store = BundleStore(root)

    def names(self) -> list[str]:
        return [m.name for m in self.store.list() if m.active]

    def open(self, name: str) -> Bundle:
        return self.store.active(name)

    def current_version(self, name: str) -> str | None:
        return next((m.active for m in self.store.list() if m.name == name), None)

    def pinned_variant(self, name: str) -> str | None:
        version = self.current_version(name)
        return self.store.pinned_variant(name, version) if version is not None else None
