"""A verified directory's stamp: opening it again hashes nothing while no file changed, and a changed file is
hashed and refused as before, even when its size and modification time were put back."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from edge_sdk.bundle import Bundle, stamp
from edge_sdk.errors import BundleError
from edge_sdk.store import BundleStore


@pytest.fixture
def hashed(monkeypatch) -> list[str]:
    """The files hashed while the test runs (a spy around the one hashing function bundles use)."""
    import edge_sdk.bundle.bundle as module

    seen: list[str] = []
    real = module.sha256_file

    def counting(path: Path) -> str:
        seen.append(path.name)
        return real(path)

    monkeypatch.setattr(module, "sha256_file", counting)
    # Files written this close before the stamp are "racy" and never trusted (stamp.py); the test waits past it.
    monkeypatch.setattr(stamp, "RACY_NS", 200_000_000)
    return seen


def _settle() -> None:
    time.sleep(0.3)  # past the racy window above


def _flip_a_byte_keeping_size_and_mtime(path: Path) -> None:
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # what `touch -r` would do to hide it


def _model_file(root: Path) -> Path:
    return root / Bundle.open(root).variant().files[0].path


def test_an_unchanged_directory_is_not_hashed_again_and_a_changed_file_is_refused(tiny_copy, tmp_path, hashed):
    model = _model_file(tiny_copy)
    _settle()
    hashed.clear()
    stamp_file = tmp_path / "stamps" / "b.json"
    first = Bundle.open(tiny_copy, stamp=stamp_file)
    assert model.name in hashed and stamp_file.is_file()
    hashed.clear()
    assert Bundle.open(tiny_copy, stamp=stamp_file).manifest == first.manifest
    assert hashed == []

    _flip_a_byte_keeping_size_and_mtime(model)
    with pytest.raises(BundleError, match="modified or corrupted"):
        Bundle.open(tiny_copy, stamp=stamp_file)
    assert model.name in hashed


def test_a_file_put_in_place_of_another_is_hashed(tiny_copy, tmp_path, hashed):
    model = _model_file(tiny_copy)
    stamp_file = tmp_path / "b.json"
    _settle()
    Bundle.open(tiny_copy, stamp=stamp_file)
    same_bytes = tmp_path / "same"
    shutil.copy2(model, same_bytes)
    same_bytes.replace(model)  # a new inode with the same size, times and bytes: checked, and accepted
    hashed.clear()
    Bundle.open(tiny_copy, stamp=stamp_file)
    assert model.name in hashed


def test_a_stamp_written_right_after_the_files_is_not_trusted(tiny_copy, tmp_path, hashed):
    # the files were just copied: their times may equal those of a change made a moment later
    stamp_file = tmp_path / "b.json"
    Bundle.open(tiny_copy, stamp=stamp_file)
    hashed.clear()
    Bundle.open(tiny_copy, stamp=stamp_file)
    assert hashed  # the first stamp was too close to the copy: hashed again, and stamped anew


def test_the_store_verifies_at_install_and_opens_the_active_version_by_its_stamp(tiny_bundle, tmp_path, hashed):
    store = BundleStore(tmp_path / "store")
    store.install(tiny_bundle.root)
    _settle()
    store.active(tiny_bundle.name)  # the install's stamp was racy (files just copied): hashed once more here
    hashed.clear()
    active = store.active(tiny_bundle.name)
    assert hashed == []  # a daemon's start

    _flip_a_byte_keeping_size_and_mtime(active.root / active.variant().files[0].path)
    with pytest.raises(BundleError, match="modified or corrupted"):
        store.active(tiny_bundle.name)


def test_removing_a_version_removes_its_stamp(synthetic_bundle, tmp_path):
    store = BundleStore(tmp_path / "store")
    one = synthetic_bundle(tmp_path / "one", version="1.0.0")
    two = synthetic_bundle(tmp_path / "two", version="1.1.0")
    store.install(one.root)
    store.install(two.root)
    stamps = tmp_path / "store" / "models" / one.name / "verified"
    assert sorted(p.name for p in stamps.iterdir()) == ["1.0.0.json", "1.1.0.json"]
    store.remove(one.name, "1.0.0")
    assert sorted(p.name for p in stamps.iterdir()) == ["1.1.0.json"]
