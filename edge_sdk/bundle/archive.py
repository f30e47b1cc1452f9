"""`.edgebundle` files: a plain tar of the bundle directory, packed reproducibly and unpacked defensively."""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

from edge_sdk.bundle.files import safe_relative
from edge_sdk.errors import BundleError

SUFFIX = ".edgebundle"
MAX_MEMBERS = 10_000


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
    """Extract regular files and directories only; refuse links, devices and paths that escape `dest`.

    Every member is checked before any byte is written, so a bad archive leaves nothing behind.
    """
    try:
        tar = tarfile.open(archive, "r:*")  # noqa: SIM115 - closed by the with-block below
    except (tarfile.TarError, OSError) as exc:
        raise BundleError(f"{str(archive)!r} is not a readable {SUFFIX} archive: {exc}") from None
    with tar:
        members = tar.getmembers()
        if len(members) > MAX_MEMBERS:
            raise BundleError(f"archive has {len(members)} members, more than the limit {MAX_MEMBERS}")
        for member in members:
            _check_member(member)
        dest.mkdir(parents=True, exist_ok=True)
        try:
            for member in members:
                target = dest / safe_relative(member.name, what="archive member")
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(member)
                if src is None:  # pragma: no cover - regular files always have data
                    raise BundleError(f"archive member {member.name!r} has no data")
                with src, target.open("xb") as out:
                    shutil.copyfileobj(src, out)
        except FileExistsError as exc:
            raise BundleError(f"archive holds {exc.filename!r} twice") from None
    return dest


def _check_member(member: tarfile.TarInfo) -> None:
    name = member.name
    if member.issym() or member.islnk():
        kind = "symlink" if member.issym() else "hardlink"
        raise BundleError(f"archive member {name!r} is a {kind}; bundles hold regular files only")
    if not (member.isfile() or member.isdir()):
        raise BundleError(f"archive member {name!r} is a special file; bundles hold regular files only")
    safe_relative(name, what="archive member")
