"""The bundle registry: published `.edgebundle` files side by side, with an index of what each one holds.

    root/                                   a path every gateway replica mounts
      bundles/<name>/<version>.edgebundle   never modified once renamed in
      .incoming/                            uploads being received and verified
      index.sqlite3                         the index, unless the gateway's database (PostgreSQL) holds it

The index ({name, version, sha256, size, signed, key_id, published_at}) lives in the gateway's database, so a
publish on one replica is listed by all; its write transaction admits one publisher at a time. An `index.json`
left by an older gateway is imported once.

A bundle is verified completely (digests, file list, schema, and with `trust` its signature) before it is
accepted. Publishing the same bytes again is a no-op; the same name and version with other bytes is refused,
so a version a device has downloaded never changes under it.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cloud_sync.database import Database, Transaction, open_database
from edge_sdk.bundle import Bundle, archive
from edge_sdk.bundle.files import sha256_file
from edge_sdk.bundle.signing import SIGNATURE_NAME, TrustedKey, read_signature
from edge_sdk.errors import BundleError, PublishConflictError, RegistryError, choices
from edge_sdk.fsutil import fsync_dir
from edge_sdk.semver import build_metadata_refusal, version_key

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

    def __init__(
        self, root: str | Path, *, trust: Sequence[TrustedKey] | None = None, database: Database | None = None
    ) -> None:
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
        self._owned = database is None
        self.db: Database = database if database is not None else open_database(self.root / "index.sqlite3")
        self.db.migrate("registry", _SCHEMA)
        self._import_json_index()

    def close(self) -> None:
        if self._owned:
            self.db.close()

    # ------------------------------------------------------------------------------------------ publish
    def incoming_file(self) -> Path:
        """A fresh file to receive an upload into (same filesystem as bundles/, so accepting is a rename)."""
        fd, name = tempfile.mkstemp(prefix="upload-", suffix=archive.SUFFIX, dir=self._incoming)
        os.close(fd)
        return Path(name)

    def publish(
        self, path: str | Path, *, before_listed: Callable[[str, str], None] | None = None
    ) -> tuple[RegistryEntry, bool]:
        """Verify a bundle (directory or .edgebundle) and add it; returns the entry and whether it is new.

        A file inside `.incoming/` is moved in (the upload path); anything else is packed or copied.
        `before_listed(name, version)` runs once the bundle is accepted and before it can be listed (a hold).
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
            return self._accept(work, before_listed)
        finally:
            work.unlink(missing_ok=True)

    def _accept(self, upload: Path, before_listed: Callable[[str, str], None] | None) -> tuple[RegistryEntry, bool]:
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
        with self.db.transaction(_LOCK) as tx:
            old = self._row(tx, name, version)
            if old is not None and old.sha256 != sha256:
                raise PublishConflictError(
                    f"{name} {version} is already published with other contents (sha256 {old.sha256[:12]}… "
                    f"published, {sha256[:12]}… offered): give the new bundle a new version"
                )
            if before_listed is not None:
                before_listed(name, version)
            if old is not None:
                if not self.path_of(name, version, must_exist=False).is_file():
                    self._place(upload, name, version)  # the same bytes again restore a lost file
                return old, False
            self._place(upload, name, version)
            tx.execute(  # after the file: an indexed version always has its bytes
                "INSERT INTO registry_entries VALUES (?, ?, ?, ?, ?, ?, ?)",
                (name, version, sha256, size, int(entry.signed), key, entry.published_at),
            )
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
        with self.db.transaction() as tx:
            if name is None:
                rows = tx.execute(f"SELECT {_COLUMNS} FROM registry_entries")
            else:
                rows = tx.execute(f"SELECT {_COLUMNS} FROM registry_entries WHERE name = ?", (name,))
        entries = [_entry(row) for row in rows]
        return sorted(entries, key=lambda e: (e.name, version_key(e.version)))

    def entry(self, name: str, version: str) -> RegistryEntry:
        with self.db.transaction() as tx:
            found = self._row(tx, name, version)
        if found is None:
            versions = [e.version for e in self.list(name)]
            if not versions:
                names = sorted({e.name for e in self.list()})
                raise RegistryError(f"no model {name!r} is published; published: {choices(names) or 'none'}")
            raise RegistryError(f"{name!r} has no published version {version!r}; published: {choices(versions)}")
        return found

    def path_of(self, name: str, version: str, *, must_exist: bool = True) -> Path:
        if must_exist:
            self.entry(name, version)  # names come from URLs: only what the index holds is a path
        return self._bundles / name / f"{version}{archive.SUFFIX}"

    # ------------------------------------------------------------------------------------------ internals
    def _row(self, tx: Transaction, name: str, version: str) -> RegistryEntry | None:
        rows = tx.execute(f"SELECT {_COLUMNS} FROM registry_entries WHERE name = ? AND version = ?", (name, version))
        return _entry(rows[0]) if rows else None

    def _import_json_index(self) -> None:
        """An index.json of an older gateway: its entries into the database, once; the file is kept as .imported."""
        path = self.root / "index.json"
        if not path.is_file():
            return
        try:
            entries = [RegistryEntry(**item) for item in json.loads(path.read_text())]
        except (ValueError, TypeError) as exc:
            raise RegistryError(f"registry index {str(path)!r} is unreadable: {exc}") from None
        with self.db.transaction(_LOCK) as tx:
            for e in entries:
                tx.execute(
                    "INSERT INTO registry_entries VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name, version) DO NOTHING",
                    (e.name, e.version, e.sha256, e.size, int(e.signed), e.key_id, e.published_at),
                )
        os.replace(path, path.with_name("index.json.imported"))


_LOCK = "registry"  # one publisher at a time, across gateway replicas
_COLUMNS = "name, version, sha256, size, signed, key_id, published_at"
_SCHEMA = [
    """
    CREATE TABLE IF NOT EXISTS registry_entries (
        name TEXT NOT NULL, version TEXT NOT NULL, sha256 TEXT NOT NULL, size INTEGER NOT NULL,
        signed INTEGER NOT NULL, key_id TEXT, published_at REAL NOT NULL, PRIMARY KEY (name, version))
    """
]


def _entry(row: tuple[Any, ...]) -> RegistryEntry:
    name, version, sha256, size, signed, key_id, published_at = row
    return RegistryEntry(name, version, sha256, int(size), bool(signed), key_id, float(published_at))
