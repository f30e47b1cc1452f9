"""The device-side bundle store: verified versions side by side, one active, switched atomically.

    root/
      .lock                         flock: one writer (install, activate, rollback, remove) at a time
      .staging/install-*/bundle     a bundle being copied and verified; same filesystem as models/
      models/<name>/versions/<ver>/ a verified bundle directory, never modified once renamed in
      models/<name>/current   ->    versions/<ver>   the version a daemon serves
      models/<name>/previous  ->    versions/<ver>   where `rollback` goes
      models/<name>/pinned-variants.json  {version: variant id} the operator chose (`install --variant`)
      models/<name>/verified/<ver>.json   the version's stamp: its files as they were when last verified in full,
                                    so opening it again (a daemon's start) hashes nothing while none changed
      trusted-keys/*.pub            optional: once a key is here, every install must be signed by one of them

Every change that matters is one atomic rename: the staged directory into `versions/`, then a fresh
`current.tmp-<pid>` symlink over `current`. A crash at any moment therefore leaves `current` at the old or
the new version, plus debris that `recover()` (run when a store is opened) deletes.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import json
import os
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edge_sdk.errors import BundleError, StoreError, choices
from edge_sdk.fsutil import file_lock, fsync_dir, fsync_tree
from edge_sdk.semver import build_metadata_refusal, version_key

# The bundle modules (pydantic manifests) are imported by the operations that open bundles: listing a store
# (`edge-sdk models`, the daemon's readiness) reads only directories and links.
if TYPE_CHECKING:
    from edge_sdk.bundle import Bundle
    from edge_sdk.bundle.signing import TrustedKey

CURRENT = "current"
PREVIOUS = "previous"
TRUSTED_KEYS = "trusted-keys"
PINS = "pinned-variants.json"
STAMPS = "verified"

# Test hook: with EDGE_SDK_STORE_CRASH_AT=<step> the process SIGKILLs itself at that step boundary, so the
# tests can prove the store survives a crash anywhere. Steps in the order an install reaches them.
CRASH_ENV = "EDGE_SDK_STORE_CRASH_AT"
STEPS = (
    "locked",  # lock held, nothing written
    "copying",  # staging holds part of the bundle
    "staged",  # staging holds all of it, unverified
    "verified",  # the staged copy passed Bundle.open
    "checked",  # the caller's check (golden set) passed
    "synced",  # staged files fsynced, not yet renamed
    "renamed",  # versions/<ver> exists, not active
    "previous-tmp",  # previous.tmp-<pid> link exists
    "previous-linked",  # previous -> the old version, current unchanged
    "current-tmp",  # current.tmp-<pid> link exists, current unchanged
    "activated",  # current -> the new version
)

Check = Callable[["Bundle"], "bool | None"]


def _step(name: str) -> None:
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass(frozen=True)
class InstalledModel:
    name: str
    active: str | None
    previous: str | None
    versions: tuple[str, ...]  # oldest first


def _is_version(name: str) -> bool:
    try:
        version_key(name)
    except ValueError:
        return False
    return True


def _manifest_digest(bundle_dir: Path) -> str:
    from edge_sdk.bundle.manifest import MANIFEST_NAME

    return hashlib.sha256((bundle_dir / MANIFEST_NAME).read_bytes()).hexdigest()


class BundleStore:
    """Installed bundles under `root`. Opening a store recovers from any interrupted install."""

    def __init__(self, root: str | Path, *, lock_timeout: float = 60.0) -> None:
        self.root = Path(root)
        self.lock_timeout = lock_timeout
        self._models = self.root / "models"
        self._staging = self.root / ".staging"
        self._lock_path = self.root / ".lock"
        try:
            self._models.mkdir(parents=True, exist_ok=True)
            self._staging.mkdir(exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot use {str(self.root)!r} as a bundle store: {exc.strerror}") from None
        self.recover()

    # ----------------------------------------------------------------------------------------- writers
    def install(
        self,
        bundle_path: str | Path,
        *,
        activate: bool = True,
        check: Check | None = None,
        allow_downgrade: bool = False,
        trust: Sequence[TrustedKey] | None = None,
        variant: str | None = None,
    ) -> InstalledModel:
        """Copy, verify, check and add a bundle (directory or .edgebundle) as a new version; then activate it.

        `check` sees the verified staged copy and refuses it by returning False or raising. Re-installing a
        byte-identical version is a no-op (so an interrupted install can simply be retried). The store's own
        trusted keys apply on top of `trust` (the signer must be in both): whoever installs cannot opt out.
        `variant` pins the variant a daemon serves of this version (otherwise it chooses the best for the device).
        """
        from edge_sdk.bundle import Bundle
        from edge_sdk.bundle.signing import check_signature
        from edge_sdk.bundle.stamp import record_stamp

        device_keys = self.trusted_keys()
        source = Path(bundle_path)
        if not source.exists():
            raise StoreError(f"bundle {str(source)!r} does not exist")
        with self._locked():
            _step("locked")
            work = Path(tempfile.mkdtemp(prefix=f"install-{os.getpid()}-", dir=self._staging))
            try:
                staged = work / "bundle"
                self._stage(source, staged)
                _step("staged")
                # The staged copy is what we verify and keep: no TOCTOU. With `trust`, it must be signed.
                bundle = Bundle.open(staged, trust=trust or device_keys or None)
                if trust and device_keys:
                    check_signature(staged, bundle.manifest, device_keys)
                _step("verified")
                name, version = bundle.name, bundle.manifest.version
                if refusal := build_metadata_refusal(version):
                    raise StoreError(f"refusing to install {name}: {refusal}")
                if variant is not None:
                    bundle.variant(variant)  # refused here, naming the variants, before anything is installed
                if not allow_downgrade:
                    self._refuse_downgrade(name, version)
                target = self._models / name / "versions" / version
                if target.exists():
                    self._refuse_different(target, staged, name, version)
                else:
                    if check is not None and check(bundle) is False:
                        raise StoreError(f"the install check refused {name} {version}; nothing was installed")
                    _step("checked")
                    fsync_tree(staged)
                    _step("synced")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.rename(staged, target)
                    _step("renamed")
                    for directory in (target.parent, target.parent.parent, self._models):
                        fsync_dir(directory)
                    record_stamp(self._stamp(name, version), target)  # verified above; a rename keeps the files
            finally:
                shutil.rmtree(work, ignore_errors=True)
            self._write_pin(name, version, variant)
            if activate:
                self._switch(name, version)
            return self._describe(name)

    def activate(self, name: str, version: str) -> InstalledModel:
        """Make an installed version the active one (after verifying it again); the old one becomes previous."""
        from edge_sdk.bundle import Bundle

        with self._locked():
            Bundle.open(self._version_dir(name, version), stamp=self._stamp(name, version))
            self._switch(name, version)
            return self._describe(name)

    def rollback(self, name: str) -> InstalledModel:
        """Swap current and previous: the version active before the last activation serves again."""
        from edge_sdk.bundle import Bundle

        with self._locked():
            model = self._model_dir(name)
            current, previous = self._read_link(model / CURRENT), self._read_link(model / PREVIOUS)
            if previous is None or previous == current:
                raise StoreError(
                    f"{name!r} has no previous version to roll back to (active: {current}); "
                    f"activate one of the installed versions instead: {choices(self._versions(name))}"
                )
            Bundle.open(self._version_dir(name, previous), stamp=self._stamp(name, previous))
            # current first: a crash in between leaves previous == current, which is still consistent
            self._point(model / CURRENT, previous)
            if current is not None:
                self._point(model / PREVIOUS, current)
            return self._describe(name)

    def remove(self, name: str, version: str) -> InstalledModel | None:
        """Delete an installed version that is not active; returns what is left (None when nothing is)."""
        with self._locked():
            path = self._version_dir(name, version)
            model = path.parent.parent
            if self._read_link(model / CURRENT) == version:
                raise StoreError(
                    f"{name} {version} is the active version and cannot be removed; activate another first "
                    f"(installed: {choices(self._versions(name))})"
                )
            if self._read_link(model / PREVIOUS) == version:
                (model / PREVIOUS).unlink()
                fsync_dir(model)
            # rename out first, so a crash mid-delete leaves debris in .staging, not a half version
            trash = Path(tempfile.mkdtemp(prefix="remove-", dir=self._staging))
            os.rename(path, trash / version)
            fsync_dir(path.parent)
            shutil.rmtree(trash, ignore_errors=True)
            self._stamp(name, version).unlink(missing_ok=True)
            if not self._versions(name):
                shutil.rmtree(model, ignore_errors=True)
                return None
            return self._describe(name)

    def remove_model(self, name: str) -> tuple[str, ...]:
        """Delete a model with every version, the active one too (a daemon serving the store then answers 404
        for it); returns the versions removed."""
        with self._locked():
            model = self._model_dir(name)
            versions = self._versions(name)
            trash = Path(tempfile.mkdtemp(prefix="remove-", dir=self._staging))
            os.rename(model, trash / name)  # one rename: the model is there or gone, never half
            fsync_dir(self._models)
            shutil.rmtree(trash, ignore_errors=True)
            return versions

    def collectable(self, keep: int) -> builtins.list[tuple[str, str]]:
        """(name, version) pairs `gc(keep)` would remove: all but each model's `keep` newest versions, never the
        active or the previous one."""
        if keep < 0:
            raise StoreError(f"keep must be 0 or more versions, got {keep}")
        found = []
        for m in self.list():
            kept = set(m.versions[len(m.versions) - keep :] if keep else ()) | {m.active, m.previous}
            found += [(m.name, v) for v in m.versions if v not in kept]
        return found

    def gc(self, keep: int) -> builtins.list[tuple[str, str]]:
        """Remove old versions: all but each model's `keep` newest, never the active or previous one."""
        removed = []
        for name, version in self.collectable(keep):
            with contextlib.suppress(StoreError):  # activated by someone else meanwhile: kept
                self.remove(name, version)
                removed.append((name, version))
        return removed

    def size_bytes(self, name: str, version: str) -> int:
        """Bytes a version takes on disk (its files)."""
        return sum(p.stat().st_size for p in self._version_dir(name, version).rglob("*") if p.is_file())

    def recover(self) -> None:
        """Delete what an interrupted writer left: staging directories and half-made symlinks.

        Skipped while another process holds the lock: its staging is in use, and a live writer cleans up
        after itself (a dead one releases the lock, so the next opener recovers).
        """
        with self._locked(wait=False) as acquired:
            if not acquired:
                return
            for entry in self._staging.iterdir():
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
            for model in self._models.iterdir():
                for stray in model.glob("*.tmp-*"):
                    stray.unlink(missing_ok=True)
                if not (model / CURRENT).is_symlink() and not self._versions(model.name):
                    shutil.rmtree(model, ignore_errors=True)  # created by an install that died before its rename

    # ----------------------------------------------------------------------------------------- readers
    def pinned_variant(self, name: str, version: str) -> str | None:
        """The variant the operator chose for this version, or None (the daemon chooses)."""
        path = self._models / name / PINS
        try:
            pins = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise StoreError(f"{str(path)!r} is unreadable: {exc}") from None
        pinned = pins.get(version) if isinstance(pins, dict) else None
        return pinned if isinstance(pinned, str) else None

    def trusted_keys(self) -> builtins.list[TrustedKey]:
        """The public keys this device was configured with (`<root>/trusted-keys/*.pub`); empty when none."""
        from edge_sdk.bundle.signing import load_trusted

        return [load_trusted(p) for p in sorted((self.root / TRUSTED_KEYS).glob("*.pub"))]

    def list(self) -> list[InstalledModel]:
        return [self._describe(m.name) for m in sorted(self._models.iterdir()) if self._versions(m.name)]

    def active(self, name: str) -> Bundle:
        """The active version of `name`, opened and verified (its root is the real version directory): every digest
        is checked unless its stamp shows no file changed since they last were."""
        from edge_sdk.bundle import Bundle

        version = self._read_link(self._model_dir(name) / CURRENT)
        if version is None:
            raise StoreError(f"{name!r} has no active version; installed versions: {choices(self._versions(name))}")
        return Bundle.open(self._version_dir(name, version), stamp=self._stamp(name, version))

    # ----------------------------------------------------------------------------------------- internals
    def _stage(self, source: Path, staged: Path) -> None:
        from edge_sdk.bundle import archive

        if source.is_file():
            archive.unpack(source, staged)
            return
        copied = 0

        def copy(src: str, dst: str) -> str:
            nonlocal copied
            shutil.copyfile(src, dst)  # content only: modes and owners from elsewhere are not trusted
            copied += 1
            if copied == 1:
                _step("copying")
            return dst

        # symlinks=True copies links as links, which Bundle.open then refuses, instead of following them
        shutil.copytree(source, staged, symlinks=True, copy_function=copy)

    def _refuse_downgrade(self, name: str, version: str) -> None:
        model = self._models / name
        active = self._read_link(model / CURRENT) if model.is_dir() else None
        if active is not None and _is_version(active) and version_key(version) < version_key(active):
            raise StoreError(
                f"{name} {version} is older than the active version {active}: refusing a downgrade "
                "(pass allow_downgrade=True / --allow-downgrade, or roll back to the previous version)"
            )

    def _refuse_different(self, target: Path, staged: Path, name: str, version: str) -> None:
        from edge_sdk.bundle import Bundle

        try:
            Bundle.open(target)
        except BundleError as exc:
            raise StoreError(
                f"{name} {version} is installed but its copy fails verification ({exc}); remove it and install again"
            ) from None
        old, new = _manifest_digest(target), _manifest_digest(staged)
        if old != new:
            raise StoreError(
                f"{name} {version} is already installed with different contents (manifest sha256 {old[:12]}… "
                f"installed, {new[:12]}… offered): give the new bundle a new version, or remove {version} first"
            )

    def _switch(self, name: str, version: str) -> None:
        model = self._models / name
        old = self._read_link(model / CURRENT)
        if old == version:
            return
        if old is not None:
            # previous before current: a crash in between leaves both at the old version, still consistent
            self._point(model / PREVIOUS, old)
            _step("previous-linked")
        self._point(model / CURRENT, version)
        _step("activated")

    def _write_pin(self, name: str, version: str, variant: str | None) -> None:
        """Record (or with None clear) the pinned variant of a version: a fresh file renamed over the old one."""
        path = self._models / name / PINS
        pins = {v: p for v, p in json.loads(path.read_text()).items() if v != version} if path.exists() else {}
        if variant is None and not path.exists():
            return
        if variant is not None:
            pins[version] = variant
        tmp = path.with_name(f"{PINS}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(pins, sort_keys=True))
        os.replace(tmp, path)
        fsync_dir(path.parent)

    def _point(self, link: Path, version: str) -> None:
        """Atomically (re)point `link` at versions/<version>: a fresh symlink renamed over the old one."""
        tmp = link.with_name(f"{link.name}.tmp-{os.getpid()}")
        tmp.unlink(missing_ok=True)
        os.symlink(f"versions/{version}", tmp)
        _step(f"{link.name}-tmp")
        os.replace(tmp, link)
        fsync_dir(link.parent)

    def _read_link(self, link: Path) -> str | None:
        try:
            target = os.readlink(link)
        except FileNotFoundError:
            return None
        head, _, version = target.partition("/")
        if head != "versions" or not version or "/" in version or version in (".", ".."):
            raise StoreError(f"{str(link)!r} points at {target!r}, outside its versions/ directory")
        return version

    def _names(self) -> builtins.list[str]:  # `list` is a method here
        return sorted(p.name for p in self._models.iterdir() if p.is_dir())

    def _versions(self, name: str) -> tuple[str, ...]:
        versions = self._models / name / "versions"
        if not versions.is_dir():
            return ()
        found = [p.name for p in versions.iterdir() if p.is_dir() and _is_version(p.name)]
        return tuple(sorted(found, key=version_key))

    def _model_dir(self, name: str) -> Path:
        # names come from users: only a directory that is really there is accepted, so no path escapes
        if name not in self._names():
            raise StoreError(f"no model {name!r} is installed; installed: {choices(self._names()) or 'none'}")
        return self._models / name

    def _version_dir(self, name: str, version: str) -> Path:
        model = self._model_dir(name)
        if version not in self._versions(name):
            raise StoreError(
                f"{name!r} has no installed version {version!r}; installed: {choices(self._versions(name))}"
            )
        return model / "versions" / version

    def _stamp(self, name: str, version: str) -> Path:
        return self._models / name / STAMPS / f"{version}.json"

    def _describe(self, name: str) -> InstalledModel:
        model = self._models / name
        return InstalledModel(
            name, self._read_link(model / CURRENT), self._read_link(model / PREVIOUS), self._versions(name)
        )

    @contextlib.contextmanager
    def _locked(self, *, wait: bool = True) -> Iterator[bool]:
        """Hold the store's flock; yields False at once instead of waiting when `wait` is False."""

        def busy() -> StoreError:
            return StoreError(
                f"store {str(self.root)!r} is busy: another install, activation or rollback has held "
                f"{str(self._lock_path)!r} for over {self.lock_timeout:g} s; try again when it finishes"
            )

        with file_lock(self._lock_path, wait_s=self.lock_timeout if wait else None, busy=busy) as acquired:
            yield acquired
