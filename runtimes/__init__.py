"""Engine adapters behind one Runtime / Session interface, resolved through the kernel's registry."""

from __future__ import annotations

from typing import cast

from edge_sdk import registry
from edge_sdk.types import Backend
from runtimes.base import LoadStats, Piece, Runtime, Session, SessionOptions, TokenLogprob


def get_runtime(backend: Backend) -> Runtime:
    """An instance of the runtime registered for `backend` (imports its engine on first use)."""
    cls = cast(type[Runtime], registry.load(backend, registry.Role.RUNTIME))
    return cls()


__all__ = ["LoadStats", "Piece", "Runtime", "Session", "SessionOptions", "TokenLogprob", "get_runtime"]
