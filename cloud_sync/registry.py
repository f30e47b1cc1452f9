"""The bundle registry: published `.edgebundle` files side by side, with an index of what each one holds.

    root/
      index.json                            [{name, version, sha256, size, signed, key_id, published_at}]
      bundles/<name>/<version>.edgebundle   never modified once renamed in
      .incoming/                            uploads being received and verified
      .lock                                 flock: one publisher at a time

A bundle is verified completely (digests, file list, schema, and with `trust` its signature) before it is
accepted. Publishing the same bytes again is a no-op; the same name and version with other bytes is refused,
so a version a device has downloaded never changes under it.
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from edge_sdk.bundle import Bundle, archive
from edge_sdk.bundle.files import sha256_file
from edge_sdk.bundle.signing import SIGNATURE_NAME, TrustedKey, read_signature
from edge_sdk.errors import BundleError, PublishConflictError, RegistryError, choices
from edge_sdk.fsutil import fsync_dir
from edge_sdk.semver import build_metadata_refusal, version_key

INDEX = "index.json"
STALE_UPLOAD_S = 3600.0  # an upload untouched this long was abandoned by a process that died


# Where a gateway serves the registry: the client (sync) and the gateway's routes share it.
REGISTRY_PREFIX = "/v1/registry/bundles"


@dataclass(frozen=True)
class RegistryEntry:
    name: str
    version: str
    sha256: str  # of the .edgebundle file as served
    size: int
    signed: bool
    key_id: str | None  # the signing key's id, when signed
    published_at: float

    def to_json(self) -> dict[str, object]:
        return asdict(self)


class Registry:
    """Published bundles under `root`. With `trust`, only bundles signed by one of those keys are accepted."""

    def __init__(self, root: str | Path, *, trust: Sequence[TrustedKey] | None = None) -> None:
        self.root = Path(root)
        self.trust = list(trust) if trust else None
        self._bundles = self.root / "bundles"
        self._incoming = self.root / ".incoming"
        try:
            self._bundles.mkdir(parents=True, exist_ok=True)
            self._incoming.mkdir(exist_ok=True)
        except OSError as exc:
            raise RegistryError(f"cannot use {str(self.root)!r} as a registry: {exc.strerror}") from None
        for stale in self._incoming.iterdir():
            with contextlib.suppress(OSError):
                if time.time() - stale.stat().st_mtime > STALE_UPLOAD_S:
                    stale.unlink()

    # ------------------------------------------------------------------------------------------ publish
    def incoming_file(self) -> Path:
        """A fresh file to receive an upload into (same filesystem as bundles/, so accepting is a rename)."""
        fd, name = tempfile.mkstemp(prefix="upload-", suffix=archive.SUFFIX, dir=self._incoming)
        os.close(fd)
        return Path(name)

    def publish(self, path: str | Path) -> tuple[RegistryEntry, bool]:
        """Verify a bundle (directory or .edgebundle) and add it; returns the entry and whether it is new.

        A file inside `.incoming/` is moved in (the upload path); anything else is packed or copied.
        """
        source = Path(path)
        if not source.exists():
            raise RegistryError(f"bundle {str(source)!r} does not exist")
        work = self.incoming_file()
        try:
            if source.is_dir():
                Bundle.open(source, trust=self.trust).pack(work)
            elif source.parent.resolve() == self._incoming.resolve():
                os.replace(source, work)
            else:
                shutil.copyfile(source, work)
            return self._accept(work)
        finally:
            work.unlink(missing_ok=True)

    def _accept(self, upload: Path) -> tuple[RegistryEntry, bool]:
        try:
            bundle = Bundle.open(upload, trust=self.trust)
        except BundleError as exc:
            raise RegistryError(f"refusing to publish: {exc}") from None
        signature = bundle.root / SIGNATURE_NAME
        key = None
        if signature.is_file():  # checked against keys only when the registry trusts some; well-formed always
            try:
                key = read_signature(signature).key_id
            except BundleError as exc:
                raise RegistryError(f"refusing to publish: {exc}") from None
        name, version = bundle.name, bundle.manifest.version
        if refusal := build_metadata_refusal(version):
            raise RegistryError(f"refusing to publish {name}: {refusal}")
        sha256, size = sha256_file(upload), upload.stat().st_size
        entry = RegistryEntry(name, version, sha256, size, signature.is_file(), key, time.time())
        with self._locked():
            index = self._read_index()
            old = next((e for e in index if e.name == name and e.version == version), None)
            if old is not None:
                if old.sha256 != sha256:
                    raise PublishConflictError(
                        f"{name} {version} is already published with other contents (sha256 {old.sha256[:12]}… "
                        f"published, {sha256[:12]}… offered): give the new bundle a new version"
                    )
                if not self.path_of(name, version, must_exist=False).is_file():
                    self._place(upload, name, version)  # the same bytes again restore a lost file
                return old, False
            self._place(upload, name, version)
            self._write_index([*index, entry])  # after the file: an indexed version always has its bytes
        return entry, True

    def _place(self, upload: Path, name: str, version: str) -> None:
        target = self.path_of(name, version, must_exist=False)
        target.parent.mkdir(parents=True, exist_ok=True)
        with upload.open("rb") as fh:
            os.fsync(fh.fileno())
        os.rename(upload, target)
        fsync_dir(target.parent)

    # ------------------------------------------------------------------------------------------ read
    def list(self, name: str | None = None) -> builtins.list[RegistryEntry]:
        """Published entries (of one model when `name` is given), by name then oldest version first."""
        entries = [e for e in self._read_index() if name is None or e.name == name]
        return sorted(entries, key=lambda e: (e.name, version_key(e.version)))

    def entry(self, name: str, version: str) -> RegistryEntry:
        index = self._read_index()
        found = next((e for e in index if e.name == name and e.version == version), None)
        if found is None:
            versions = [e.version for e in self.list(name)]
            if not versions:
                names = sorted({e.name for e in index})
                raise RegistryError(f"no model {name!r} is published; published: {choices(names) or 'none'}")
            raise RegistryError(f"{name!r} has no published version {version!r}; published: {choices(versions)}")
        return found

    def path_of(self, name: str, version: str, *, must_exist: bool = True) -> Path:
        if must_exist:
            self.entry(name, version)  # names come from URLs: only what the index holds is a path
        return self._bundles / name / f"{version}{archive.SUFFIX}"

    # ------------------------------------------------------------------------------------------ internals
    def _read_index(self) -> builtins.list[RegistryEntry]:  # `list` is a method here
        path = self.root / INDEX
        if not path.is_file():
            return []
        try:
            return [RegistryEntry(**item) for item in json.loads(path.read_text())]
        except (ValueError, TypeError) as exc:
            raise RegistryError(f"registry index {str(path)!r} is unreadable: {exc}") from None

    def _write_index(self, entries: builtins.list[RegistryEntry]) -> None:
        tmp = self.root / f"{INDEX}.tmp-{os.getpid()}"
        with tmp.open("w") as fh:
            json.dump([e.to_json() for e in entries], fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.root / INDEX)  # readers see the old index or the new one, never half of one
        fsync_dir(self.root)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)
