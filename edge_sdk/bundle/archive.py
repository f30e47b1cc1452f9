"""`.edgebundle` files: a plain tar of the bundle directory, packed reproducibly and unpacked defensively.

Unpacking reads every member header first (at most MAX_MEMBERS), then the manifest, and writes nothing until
each member is known to be a regular file or directory at a safe path, not sparse, listed in the manifest with
exactly the size found in the archive, and its data inside the archive file. So the bytes written are bounded
by the manifest's declared sizes and by the archive's own size, whatever the archive claims; and any damage
is a BundleError, never a tarfile, EOF or OS error.
"""

from __future__ import annotations

import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from edge_sdk.bundle.files import safe_relative
from edge_sdk.bundle.manifest import MANIFEST_NAME, MAX_MANIFEST_BYTES, Manifest, parse_manifest
from edge_sdk.bundle.signing import MAX_SIGNATURE_BYTES, SIGNATURE_NAME
from edge_sdk.errors import BundleError

SUFFIX = ".edgebundle"
MAX_MEMBERS = 10_000
_CHUNK = 1 << 20
# What tarfile, the file system and a damaged stream raise; each becomes a BundleError naming the archive.
_READ_ERRORS = (tarfile.TarError, EOFError, OSError, ValueError, OverflowError)


@dataclass(frozen=True)
class _Member:
    info: tarfile.TarInfo
    rel: PurePosixPath


def pack(bundle_dir: Path, dest: Path) -> Path:
    """Write `bundle_dir` as a tar with sorted names, zero mtimes and no owners, so packing is reproducible."""
    files = sorted(p for p in bundle_dir.rglob("*") if p.is_file())
    tmp = dest.with_name(dest.name + ".part")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in files:
            info = tar.gettarinfo(str(path), arcname=path.relative_to(bundle_dir).as_posix())
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = 0o644
            with path.open("rb") as fh:
                tar.addfile(info, fh)
    tmp.replace(dest)
    return dest


def unpack(archive: Path, dest: Path) -> Path:
    """Extract a bundle archive into `dest` after checking all of it; a refused archive writes nothing.

    Only uncompressed tars are read (as `pack` writes them): every byte extracted is then a byte of the file.
    """
    try:
        size = archive.stat().st_size
        # Plain tar only: a compressed stream could expand far beyond the upload it arrived in.
        tar = tarfile.open(archive, "r:")  # noqa: SIM115 - closed by the with-block below
    except (*_READ_ERRORS, RecursionError) as exc:
        raise BundleError(f"{str(archive)!r} is not a readable {SUFFIX} archive (an uncompressed tar): {exc}") from None
    with tar:
        try:
            members = _members(tar, size)
            manifest = _read_manifest(tar, members)
            total = _check_against_manifest(members, manifest)
            _check_space(dest, total)
            _write(tar, members, dest)
        except (*_READ_ERRORS, RecursionError) as exc:
            if isinstance(exc, BundleError):
                raise
            raise BundleError(f"{str(archive)!r} is damaged: {type(exc).__name__}: {exc}") from None
    return dest


def _members(tar: tarfile.TarFile, archive_size: int) -> list[_Member]:
    """Every member header, checked one by one as it is read (so a million-member archive stops at the cap)."""
    members: list[_Member] = []
    seen: dict[str, bool] = {}  # normalized path -> is a directory
    while (info := tar.next()) is not None:
        if len(members) >= MAX_MEMBERS:
            raise BundleError(f"archive has more than {MAX_MEMBERS} members, the limit for a bundle")
        rel = _check_member(info, archive_size)
        key = rel.as_posix()
        if key in seen and not (seen[key] and info.isdir()):
            raise BundleError(f"archive holds {key!r} twice")
        seen[key] = info.isdir()
        members.append(_Member(info, rel))
    for key, is_dir in seen.items():
        # "a" as a file and "a/b" beside it cannot both be written: refuse rather than fail half-way.
        for parent in PurePosixPath(key).parents:
            if seen.get(parent.as_posix()) is False:
                what = "directory" if is_dir else "file"
                raise BundleError(f"archive member {key!r} is a {what} under {parent.as_posix()!r}, which is a file")
    return members


def _check_member(member: tarfile.TarInfo, archive_size: int) -> PurePosixPath:
    name = member.name
    if member.issym() or member.islnk():
        kind = "symlink" if member.issym() else "hardlink"
        raise BundleError(f"archive member {name!r} is a {kind}; bundles hold regular files only")
    if not (member.isfile() or member.isdir()):
        raise BundleError(f"archive member {name!r} is a special file; bundles hold regular files only")
    if member.sparse is not None:
        # A sparse member's size is what it expands to, not what the archive holds: 300 KB can claim 1 GiB.
        raise BundleError(f"archive member {name!r} is a sparse file; bundles hold plain regular files only")
    rel = safe_relative(name, what="archive member")
    if member.isfile() and member.offset_data + member.size > archive_size:
        raise BundleError(
            f"archive member {name!r} claims {member.size} bytes at offset {member.offset_data}, beyond the end "
            f"of the {archive_size}-byte archive: it is truncated or hostile"
        )
    return rel


def _read_manifest(tar: tarfile.TarFile, members: list[_Member]) -> Manifest:
    found = next((m for m in members if m.rel.as_posix() == MANIFEST_NAME and m.info.isfile()), None)
    if found is None:
        raise BundleError(f"archive is not a bundle: it has no regular file {MANIFEST_NAME}")
    if found.info.size > MAX_MANIFEST_BYTES:
        raise BundleError(f"{MANIFEST_NAME} is {found.info.size} bytes, more than the limit of {MAX_MANIFEST_BYTES}")
    src = tar.extractfile(found.info)
    if src is None:  # pragma: no cover - regular files always have data
        raise BundleError(f"archive member {MANIFEST_NAME!r} has no data")
    with src:
        return parse_manifest(src.read())


def _check_against_manifest(members: list[_Member], manifest: Manifest) -> int:
    """Each file must be listed with exactly its size; returns the bytes extraction will write."""
    declared: dict[str, int] = {}
    for entry in manifest.all_files():
        declared[safe_relative(entry.path, what="manifest file path").as_posix()] = entry.size
    limits = {MANIFEST_NAME: MAX_MANIFEST_BYTES, SIGNATURE_NAME: MAX_SIGNATURE_BYTES}
    total = 0
    for m in members:
        if m.info.isdir():
            continue
        key = m.rel.as_posix()
        if key in limits:
            if m.info.size > limits[key]:
                raise BundleError(f"{key} is {m.info.size} bytes, more than the limit of {limits[key]}")
        elif key not in declared:
            raise BundleError(f"archive holds {key!r}, which its manifest does not list")
        elif m.info.size != declared[key]:
            raise BundleError(
                f"archive member {key!r} is {m.info.size} bytes, the manifest says {declared[key]}: "
                "truncated, replaced or hostile"
            )
        total += m.info.size
    return total


def _check_space(dest: Path, total: int) -> None:
    existing = next(p for p in (dest, *dest.parents) if p.exists())
    free = shutil.disk_usage(existing).free
    if total > free:
        raise BundleError(f"the bundle needs {total} bytes to unpack, {str(existing)!r} has {free} free")


def _write(tar: tarfile.TarFile, members: list[_Member], dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for m in members:
        target = dest / m.rel
        if m.info.isdir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        src = tar.extractfile(m.info)
        if src is None:  # pragma: no cover - regular files always have data
            raise BundleError(f"archive member {m.info.name!r} has no data")
        left = m.info.size
        with src, target.open("xb") as out:
            while left > 0 and (chunk := src.read(min(_CHUNK, left))):
                out.write(chunk)
                left -= len(chunk)
        if left:
            raise BundleError(f"archive member {m.info.name!r} ends {left} bytes early: the archive is truncated")
