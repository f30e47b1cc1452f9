"""BundleWriter: collects golden data and variants, then writes a bundle directory atomically."""

from __future__ import annotations

import shutil
import tempfile
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

from edge_sdk.bundle.bundle import Bundle, verify_dir
from edge_sdk.bundle.files import safe_relative, sha256_file
from edge_sdk.bundle.manifest import (
    MANIFEST_NAME,
    SCHEMA_VERSION,
    AccuracyReport,
    FailedVariant,
    FileEntry,
    FitReport,
    Golden,
    Manifest,
    Preprocessing,
    Recipe,
    RuntimeRequirement,
    SourceInfo,
    Variant,
)
from edge_sdk.errors import BundleError
from edge_sdk.types import Backend, Task, TensorSpec

if TYPE_CHECKING:
    import numpy as np


class _State(Enum):
    COLLECTING = "collecting variants"
    WRITTEN = "written"


class BundleWriter:
    """Stage files in a private directory; `write` verifies the result and moves it into place."""

    def __init__(self, *, name: str, version: str, task: Task, source: SourceInfo, created_by: str) -> None:
        self._header = {
            "name": name,
            "version": version,
            "task": task,
            "source": source,
            "created_by": created_by,
        }
        self._stage = Path(tempfile.mkdtemp(prefix="edge-bundle-stage-"))
        self._variants: list[Variant] = []
        self._golden: Golden | None = None
        self._preprocessing: Preprocessing | None = None
        self._labels: tuple[str, ...] = ()
        self._failed: list[FailedVariant] = []
        self._state = _State.COLLECTING

    @property
    def root(self) -> Path:
        """The staging directory: the added variants' files are here, at the paths their entries name."""
        return self._stage

    def _expect_collecting(self, step: str) -> None:
        if self._state is not _State.COLLECTING:
            raise BundleError(f"cannot {step}: the bundle was already {self._state.value}")

    def set_golden(
        self,
        inputs: dict[str, np.ndarray],
        reference: dict[str, np.ndarray],
        labels: np.ndarray | None = None,
    ) -> None:
        self._expect_collecting("set the golden set")
        self._golden = Golden(
            inputs=self._save_npz("golden/inputs.npz", inputs),
            reference=self._save_npz("golden/reference.npz", reference),
            labels=self._save_npz("golden/labels.npz", {"labels": labels}) if labels is not None else None,
        )

    def set_preprocessing(
        self, kind: str, files: dict[str, Path], *, max_length: int, pooling: str | None = None
    ) -> None:
        """Carry what turns user input into tensors (name -> file; the tokenizer first) under preprocessing/."""
        self._expect_collecting("set the preprocessing")
        entries = []
        for name, src in files.items():
            rel = f"preprocessing/{safe_relative(name).as_posix()}"
            (self._stage / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, self._stage / rel)
            entries.append(self._entry(rel))
        self._preprocessing = Preprocessing(kind=kind, files=tuple(entries), max_length=max_length, pooling=pooling)

    def set_labels(self, labels: tuple[str, ...]) -> None:
        self._expect_collecting("set the labels")
        self._labels = tuple(labels)

    def add_failed(self, failed: FailedVariant) -> None:
        self._expect_collecting("record a failed variant")
        self._failed.append(failed)

    def add_variant(
        self,
        *,
        variant_id: str,
        backend: Backend,
        files: dict[str, Path],
        inputs: tuple[TensorSpec, ...],
        outputs: tuple[TensorSpec, ...],
        recipe: Recipe,
        runtime: RuntimeRequirement,
        accuracy: AccuracyReport | None = None,
        fit: dict[str, FitReport] | None = None,
        golden_outputs: dict[str, np.ndarray] | None = None,
    ) -> Variant:
        """Copy `files` (name in the variant -> file on disk) under variants/<id>/ and record them."""
        self._expect_collecting("add a variant")
        entries = []
        for name, src in files.items():
            rel = f"variants/{variant_id}/{safe_relative(name).as_posix()}"
            dest = self._stage / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)
            entries.append(self._entry(rel))
        golden = None
        if golden_outputs is not None:
            golden = self._save_npz(f"golden/{variant_id}.npz", golden_outputs)
        variant = Variant(
            id=variant_id,
            backend=backend,
            files=tuple(entries),
            inputs=inputs,
            outputs=outputs,
            recipe=recipe,
            runtime=runtime,
            accuracy=accuracy,
            fit=fit or {},
            golden_outputs=golden,
        )
        self._variants.append(variant)
        return variant

    def write(self, dest: str | Path, *, overwrite: bool = False) -> Bundle:
        """Write the manifest, verify the staged bundle, and move it to `dest` in one rename."""
        self._expect_collecting("write")
        dest = Path(dest)
        if dest.exists() and not overwrite and (not dest.is_dir() or any(dest.iterdir())):
            raise BundleError(f"{str(dest)!r} already exists and is not empty; choose another path or overwrite")
        if not self._variants:
            failed = "; ".join(f"{f.id}: {f.error}" for f in self._failed)
            raise BundleError(f"no variant could be built, so there is no bundle to write ({failed})")
        manifest = Manifest(
            schema_version=SCHEMA_VERSION,
            variants=tuple(self._variants),
            golden=self._golden,
            preprocessing=self._preprocessing,
            labels=self._labels,
            failed=tuple(self._failed),
            **self._header,
        )
        (self._stage / MANIFEST_NAME).write_text(manifest.model_dump_json(indent=2), encoding="utf-8")
        verify_dir(self._stage)
        dest.parent.mkdir(parents=True, exist_ok=True)
        # Stage beside the destination so the final step is a rename on one filesystem.
        beside = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
        shutil.move(str(self._stage), beside / "b")
        if dest.exists():
            old = beside / "old"
            dest.rename(old)
        (beside / "b").rename(dest)
        shutil.rmtree(beside, ignore_errors=True)
        self._state = _State.WRITTEN
        return Bundle(dest, manifest)

    def discard(self) -> None:
        shutil.rmtree(self._stage, ignore_errors=True)

    def _save_npz(self, rel: str, arrays: dict[str, np.ndarray]) -> FileEntry:
        import numpy as np

        path = self._stage / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as fh:
            np.savez(fh, **arrays)  # type: ignore[arg-type]  # numpy's stub misreads **kwargs
        return self._entry(rel)

    def _entry(self, rel: str) -> FileEntry:
        path = self._stage / rel
        return FileEntry(path=rel, sha256=sha256_file(path), size=path.stat().st_size)
