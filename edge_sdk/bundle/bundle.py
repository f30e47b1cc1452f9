"""Open and verify a bundle: nothing inside is parsed until every file has been checked."""

from __future__ import annotations

import shutil
import tempfile
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edge_sdk.bundle import stamp as stamps
from edge_sdk.bundle.files import safe_relative, sha256_file
from edge_sdk.bundle.manifest import MANIFEST_NAME, MAX_MANIFEST_BYTES, FileEntry, Manifest, Variant, parse_manifest
from edge_sdk.bundle.signing import SIGNATURE_NAME, TrustedKey, check_signature
from edge_sdk.errors import BundleError, choices
from edge_sdk.types import Backend

if TYPE_CHECKING:
    import numpy as np  # imported where golden data is read: opening a bundle needs no numpy


@dataclass(frozen=True)
class GoldenSet:
    inputs: dict[str, np.ndarray]
    reference: dict[str, np.ndarray]
    labels: np.ndarray | None


class Bundle:
    """A verified bundle directory. Use `Bundle.open`; the constructor trusts its arguments."""

    def __init__(self, root: Path, manifest: Manifest) -> None:
        self.root = root
        self.manifest = manifest

    @classmethod
    def open(cls, path: str | Path, *, trust: Sequence[TrustedKey] | None = None, stamp: Path | None = None) -> Bundle:
        """Open a bundle directory or `.edgebundle` file and verify it completely.

        With `trust`, the bundle must also carry a valid signature by one of those keys. With `stamp` (a file
        outside the bundle), a directory whose files all look as they did when it was last verified in full is not
        hashed again; otherwise it is, and the stamp is written (edge_sdk/bundle/stamp.py says what "look" means).
        """
        path = Path(path)
        if not path.exists():
            raise BundleError(f"bundle {str(path)!r} does not exist")
        if path.is_file():
            from edge_sdk.bundle import archive  # tarfile: only for archives (a daemon serves directories)

            tmp = Path(tempfile.mkdtemp(prefix="edge-bundle-"))
            try:
                archive.unpack(path, tmp)
                bundle = cls(tmp, verify_dir(tmp, trust))
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            weakref.finalize(bundle, shutil.rmtree, tmp, True)
            return bundle
        return cls(path, verify_dir(path, trust, stamp=stamp))

    @property
    def name(self) -> str:
        return self.manifest.name

    def __repr__(self) -> str:
        m = self.manifest
        ids = ", ".join(v.id for v in m.variants)
        return f"<Bundle {m.name} {m.version} ({m.task.value}) at {str(self.root)!r}: variants {ids}>"

    @property
    def variants(self) -> tuple[Variant, ...]:
        return self.manifest.variants

    def variant(self, ref: str | Backend | None = None) -> Variant:
        """Pick a variant by id or by backend (its first variant); None means the first variant."""
        if ref is None:
            return self.manifest.variants[0]
        for v in self.manifest.variants:
            if ref in (v.id, v.backend):
                return v
        raise BundleError(
            f"bundle {self.name!r} has no variant {str(ref)!r}; variants: {choices(v.id for v in self.variants)}"
        )

    def path_of(self, entry: FileEntry) -> Path:
        return self.root / safe_relative(entry.path)

    def golden(self) -> GoldenSet | None:
        g = self.manifest.golden
        if g is None:
            return None
        labels = None
        if g.labels:
            labels = _load_npz(self.path_of(g.labels))["labels"]
        return GoldenSet(_load_npz(self.path_of(g.inputs)), _load_npz(self.path_of(g.reference)), labels)

    def golden_outputs(self, variant: Variant) -> dict[str, np.ndarray] | None:
        return _load_npz(self.path_of(variant.golden_outputs)) if variant.golden_outputs else None

    def pack(self, dest: str | Path) -> Path:
        from edge_sdk.bundle import archive

        dest = Path(dest)
        if dest.suffix != archive.SUFFIX:
            dest = dest.with_name(dest.name + archive.SUFFIX)
        return archive.pack(self.root, dest)


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    import numpy as np

    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def verify_dir(root: Path, trust: Sequence[TrustedKey] | None = None, *, stamp: Path | None = None) -> Manifest:
    """Check the manifest, every digest and size, and that no file is missing, extra, or a link.

    The signature (when trust is asked for) is checked first: a manifest nobody trusted is not read further.
    The digests are not computed again when `stamp` says no file changed since they last were.
    """
    manifest_path = root / MANIFEST_NAME
    if manifest_path.is_symlink() or not manifest_path.is_file():
        raise BundleError(f"{str(root)!r} is not a bundle: it has no regular file {MANIFEST_NAME}")
    if manifest_path.stat().st_size > MAX_MANIFEST_BYTES:
        raise BundleError(f"{MANIFEST_NAME} is larger than {MAX_MANIFEST_BYTES} bytes")
    manifest = parse_manifest(manifest_path.read_bytes())
    if trust is not None:
        check_signature(root, manifest, list(trust))

    expected: dict[str, FileEntry] = {}
    for entry in manifest.all_files():
        rel = safe_relative(entry.path, what="manifest file path").as_posix()
        if rel in expected:
            raise BundleError(f"manifest lists {rel!r} twice")
        expected[rel] = entry

    present = _walk(root)
    missing = sorted(set(expected) - present)
    if missing:
        raise BundleError(f"bundle is missing files listed in its manifest: {missing}")
    extra = sorted(present - set(expected) - {MANIFEST_NAME, SIGNATURE_NAME})
    if extra:
        raise BundleError(f"bundle holds files its manifest does not list: {extra}")

    for rel, entry in expected.items():
        path = root / rel
        size = path.stat().st_size
        if size != entry.size:
            raise BundleError(f"{rel!r} is {size} bytes, the manifest says {entry.size}: truncated or replaced")
    files = sorted(present)
    if stamp is not None and stamps.matches(stamp, root, files):
        return manifest
    for rel, entry in expected.items():
        path = root / rel
        digest = sha256_file(path)
        if digest != entry.sha256:
            raise BundleError(
                f"{rel!r} has sha256 {digest[:16]}…, the manifest says {entry.sha256[:16]}…: "
                "the file was modified or corrupted"
            )
    if stamp is not None:
        stamps.record(stamp, root, files)
    return manifest


def _walk(root: Path) -> set[str]:
    """Relative paths of the regular files under root; any link or special file is refused."""
    files: set[str] = set()
    for path in root.rglob("*"):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            raise BundleError(f"bundle member {rel!r} is a symlink; bundles hold regular files only")
        if path.is_dir():
            continue
        if not path.is_file():
            raise BundleError(f"bundle member {rel!r} is a special file; bundles hold regular files only")
        if path.stat().st_nlink > 1:
            raise BundleError(f"bundle member {rel!r} is hard-linked elsewhere; bundles hold private files only")
        files.add(rel)
    return files
