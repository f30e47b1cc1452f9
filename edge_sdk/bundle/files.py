"""Digests and safe relative paths: the checks every bundle file passes before anything parses it."""

from __future__ import annotations

import hashlib
from pathlib import Path, PurePosixPath

from edge_sdk.errors import BundleError

_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def safe_relative(name: str, *, what: str = "path") -> PurePosixPath:
    """A relative POSIX path that stays inside its root, or a BundleError saying why not."""
    if not name or "\\" in name or "\x00" in name:
        raise BundleError(f"{what} {name!r} is not a plain relative POSIX path")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # e.g. a tar name that was not UTF-8: no file system call could take it back
        raise BundleError(f"{what} {name!r} is not valid UTF-8") from None
    path = PurePosixPath(name)
    if path.is_absolute():
        raise BundleError(f"{what} {name!r} is absolute; bundle paths must be relative")
    if any(part == ".." for part in path.parts):
        raise BundleError(f"{what} {name!r} contains '..' and could escape the bundle")
    parts = [p for p in path.parts if p != "."]
    if not parts:
        raise BundleError(f"{what} {name!r} names the bundle root itself")
    return PurePosixPath(*parts)
