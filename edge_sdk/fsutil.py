"""Filesystem primitives the store, the registry, sync and the queue share: durable renames and one-writer locks."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Flush a directory's entries, so a rename or a new file in it survives a power cut."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """Flush every file and directory, so a rename never publishes a tree whose bytes are still in cache."""
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(dirpath))


def try_flock(fd: int) -> bool:
    """Take an exclusive flock on `fd` without waiting; False when another process holds it.

    The kernel drops the lock when the descriptor closes, also when its process is SIGKILLed."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@contextlib.contextmanager
def file_lock(path: Path, *, wait_s: float | None, busy: Callable[[], Exception] | None = None) -> Iterator[bool]:
    """Hold an exclusive flock on `path` (created if missing) for the block; yields whether it was taken.

    `wait_s` None: do not wait (yields False when another process holds it). Otherwise wait up to `wait_s`, then
    raise `busy()`. The kernel drops the lock when the descriptor closes, also when the process is SIGKILLed."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + (wait_s or 0.0)
        while not (acquired := try_flock(fd)) and wait_s is not None:
            if time.monotonic() >= deadline:
                raise (busy() if busy is not None else TimeoutError(f"{str(path)!r} stayed locked for {wait_s:g} s"))
            time.sleep(0.05)
        yield acquired
    finally:
        os.close(fd)


# A file changed within this long before its times were recorded may carry the same times after its next change
# (timestamps come from a coarse clock, on some file systems to the second): what is kept by a file's times (a
# bundle's stamp, a GGUF header) is trusted only for files older than this ("racy clean" files, as git's index
# calls them).
RACY_NS = 2_000_000_000


def keep_in_cache(entry: Path, document: dict[str, object], path_key: str) -> None:
    """Write a cache entry (JSON) whole or not at all, then drop the directory's entries for paths gone (see
    forget_gone). Best effort: a cache that cannot be written (a read-only home, a full disk) is only slower."""
    import json

    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        partial = entry.with_name(f".{entry.name}.{os.getpid()}.partial")
        partial.write_text(json.dumps(document), encoding="utf-8")
        partial.replace(entry)
        forget_gone(entry.parent, path_key)
    except OSError:
        pass


def forget_gone(directory: Path, path_key: str, keep: int = 64) -> None:
    """Past `keep` JSON entries in a cache directory, drop those whose `path_key` names a path that no longer
    exists (the cache's entries for bundles or models used once from a temporary directory)."""
    import json

    entries = list(directory.glob("*.json"))
    if len(entries) <= keep:
        return
    for entry in entries:
        try:
            named = json.loads(entry.read_text(encoding="utf-8")).get(path_key)
        except (OSError, ValueError, AttributeError):
            named = None
        if not isinstance(named, str) or not Path(named).exists():
            entry.unlink(missing_ok=True)


def cache_dir() -> Path:
    """The user's edge-sdk cache (`EDGE_SDK_CACHE`, else ~/.cache/edge-sdk): things worth keeping between runs that
    can always be made again."""
    root = os.environ.get("EDGE_SDK_CACHE") or Path.home() / ".cache" / "edge-sdk"
    return Path(root)
