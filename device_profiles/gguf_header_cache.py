"""GGUF headers already read, by file version: in memory for this process, in the user's cache for the next one.

A daemon asks for a model's header three times as it starts (to choose a variant, to size it, to load it), and it
starts again after every reboot: walking a 50k-token vocabulary to reach the keys after it costs ~10 ms, on the
start's critical path. A version is (inode, size, mtime, ctime): a write moves the ctime, which user space cannot
set back, so a changed file is read again. A file changed within RACY_NS before it was read may share its version
with its next change, so its header is kept in memory only. An entry in the cache that is not a header (damaged,
written by something else) is ignored and the file read.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path

from edge_sdk.fsutil import RACY_NS, cache_dir, keep_in_cache

Value = int | float | bool | str
Version = tuple[int, int, int, int]

CACHE_VERSION = 1
_KEEP = 32  # headers remembered in memory (a few hundred bytes each)
_memory: dict[tuple[str, Version], dict[str, Value]] = {}
_lock = threading.Lock()  # the daemon reads headers from its loader threads


def version_of(st: os.stat_result) -> Version:
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def recall(path: str, version: Version) -> dict[str, Value] | None:
    """The header of `path` (resolved) at `version`, if it was read before; the caller must not change it."""
    with _lock:
        header = _memory.get((path, version))
    if header is None:
        header = _from_disk(path, version)
        if header is not None:
            _keep(path, version, header)
    return header


def remember(path: str, version: Version, header: dict[str, Value]) -> None:
    _keep(path, version, header)
    if version[3] < time.time_ns() - RACY_NS:
        _to_disk(path, version, header)


def _keep(path: str, version: Version, header: dict[str, Value]) -> None:
    with _lock:
        if len(_memory) >= _KEEP:
            _memory.pop(next(iter(_memory)))  # the oldest
        _memory[(path, version)] = header


def _entry(path: str) -> Path:
    return cache_dir() / "gguf-headers" / f"{hashlib.sha256(path.encode()).hexdigest()[:32]}.json"


def _from_disk(path: str, version: Version) -> dict[str, Value] | None:
    try:
        document = json.loads(_entry(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(document, dict) or document.get("cache_version") != CACHE_VERSION:
        return None
    if document.get("path") != path or document.get("version") != list(version):
        return None
    header = document.get("header")
    if not isinstance(header, dict) or not all(isinstance(v, int | float | str) for v in header.values()):
        return None
    return header


def _to_disk(path: str, version: Version, header: dict[str, Value]) -> None:
    document = {"cache_version": CACHE_VERSION, "path": path, "version": list(version), "header": header}
    keep_in_cache(_entry(path), document, "path")  # without it (a read-only home), the next start reads the file
