"""A verified bundle directory's stamp: how each of its files looked (size, inode, modification and change times)
right after every digest was checked.

Opening the directory again while every file still looks the same skips hashing: for a model of a few GB that is
seconds at every daemon start on a Raspberry Pi. A write to a file, or another file put in its place, changes its
change time (ctime) or its inode, and user space cannot set a ctime back (`touch -d` sets the modification time and
moves the ctime doing it). So a changed file does not match, and the bundle is hashed in full again: a wrong digest
is refused as before. What a stamp does not survive: a copy or restore of the directory (new inodes), which costs
one full check.

The stamp lives outside the bundle (a bundle holds only the files its manifest lists): in the store beside the
version (`edge_sdk.store`), or in the user's cache for a directory served from elsewhere.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from edge_sdk.fsutil import RACY_NS, cache_dir, keep_in_cache

STAMP_VERSION = 1


def files_stamp(root: Path, files: list[str]) -> dict[str, list[int]]:
    """Each file's [size, device, inode, mtime ns, ctime ns], by path relative to root."""
    stamp: dict[str, list[int]] = {}
    for rel in sorted(files):
        st = (root / rel).stat()
        stamp[rel] = [st.st_size, st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns]
    return stamp


def matches(stamp_path: Path, root: Path, files: list[str]) -> bool:
    """Whether `root`'s files (every file now in it) look as they did when the stamp was written."""
    try:
        recorded = json.loads(stamp_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(recorded, dict) or recorded.get("version") != STAMP_VERSION:
        return False
    if recorded.get("root") != str(root.resolve()):
        return False
    try:
        now = files_stamp(root, files)
    except OSError:
        return False
    written = recorded.get("written_ns")
    # A file changed within RACY_NS before the stamp was written never matches (fsutil says why): the next open
    # hashes it and writes a stamp it can trust.
    if not isinstance(written, int) or any(f[4] > written - RACY_NS for f in now.values()):
        return False
    return bool(recorded.get("files") == now)


def record(stamp_path: Path, root: Path, files: list[str]) -> None:
    """Write the stamp of a directory just verified in full (best effort: without one, the next open hashes)."""
    document = {
        "version": STAMP_VERSION,
        "root": str(root.resolve()),
        "written_ns": time.time_ns(),
        "files": files_stamp(root, files),
    }
    keep_in_cache(stamp_path, document, "root")


def record_stamp(stamp_path: Path, root: Path) -> None:
    """`record` for every file now under root (a directory that was just verified in full)."""
    files = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and not p.is_symlink()]
    record(stamp_path, root, files)


def cached_stamp_path(root: Path) -> Path:
    """Where the stamp of a bundle directory outside a store is kept: the user's cache, by the directory's path."""
    key = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:32]
    return cache_dir() / "verified" / f"{key}.json"
