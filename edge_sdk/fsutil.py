"""Filesystem primitives the store, the registry, sync and the queue share: durable renames and one-writer locks."""

from __future__ import annotations

import fcntl
import os
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
