"""The bundle format: round trip, and every way a damaged or hostile bundle must be refused."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import tempfile
from pathlib import Path

import pytest

from edge_sdk.bundle import SCHEMA_VERSION, Bundle
from edge_sdk.errors import BundleError, UnsupportedSchemaError
from edge_sdk.types import Backend


def test_round_trip_directory_and_archive(tiny_bundle, tmp_path):
    reopened = Bundle.open(tiny_bundle.root)
    assert reopened.manifest == tiny_bundle.manifest
    packed = tiny_bundle.pack(tmp_path / "tiny")
    assert packed.name == "tiny.edgebundle"
    from_archive = Bundle.open(packed)
    assert from_archive.manifest == tiny_bundle.manifest
    golden = from_archive.golden()
    assert golden is not None and golden.labels is not None
    assert golden.inputs["input"].shape[0] == len(golden.labels)


def test_pack_is_reproducible(tiny_bundle, tmp_path):
    a = tiny_bundle.pack(tmp_path / "a.edgebundle").read_bytes()
    b = tiny_bundle.pack(tmp_path / "b.edgebundle").read_bytes()
    assert a == b


def test_every_variant_records_files_recipe_accuracy_and_fit(tiny_bundle):
    # What the writer records must be what is on disk and must survive a reopen; that the converters fill
    # accuracy and fit in for every variant is tests/converters/test_onnx.py's business.
    m = Bundle.open(tiny_bundle.root).manifest
    assert m.schema_version == SCHEMA_VERSION
    for v in m.variants:
        assert v.files
        for f in v.files:
            data = tiny_bundle.path_of(f).read_bytes()
            assert f.size == len(data) > 0 and f.sha256 == hashlib.sha256(data).hexdigest()
        assert v.accuracy is not None and v.accuracy.passed
        assert set(v.fit) == {"rpi5", "rpi4"}
        assert v.golden_outputs is not None
        assert tiny_bundle.golden_outputs(v)["output"].shape == tiny_bundle.golden().reference["output"].shape


def _model_file(root: Path) -> Path:
    """The first variant's first file, as the manifest lists it (read before the test damages anything)."""
    return root / Bundle.open(root).variant().files[0].path


def test_flipped_byte_is_refused(tiny_copy):
    path = _model_file(tiny_copy)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="modified or corrupted"):
        Bundle.open(tiny_copy)


def test_truncated_file_is_refused(tiny_copy):
    path = _model_file(tiny_copy)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(BundleError, match="truncated"):
        Bundle.open(tiny_copy)


def test_missing_file_is_refused(tiny_copy):
    (tiny_copy / "golden" / "inputs.npz").unlink()
    with pytest.raises(BundleError, match="missing files.*golden/inputs.npz"):
        Bundle.open(tiny_copy)


def test_extra_file_is_refused(tiny_copy):
    (tiny_copy / "variants" / "payload.sh").write_text("echo hi")
    with pytest.raises(BundleError, match="does not list.*payload.sh"):
        Bundle.open(tiny_copy)


def test_symlink_inside_directory_is_refused(tiny_copy):
    (tiny_copy / "link").symlink_to("/etc/passwd")
    with pytest.raises(BundleError, match="symlink"):
        Bundle.open(tiny_copy)


def test_newer_schema_is_refused_before_validation(tiny_copy):
    manifest = tiny_copy / "manifest.json"
    data = json.loads(manifest.read_text())
    data["schema_version"] = SCHEMA_VERSION + 1
    data["something_new"] = {"the": "future"}
    manifest.write_text(json.dumps(data))
    with pytest.raises(UnsupportedSchemaError, match="upgrade edge-sdk"):
        Bundle.open(tiny_copy)


def test_manifest_path_escaping_the_bundle_is_refused(tiny_copy):
    manifest = tiny_copy / "manifest.json"
    data = json.loads(manifest.read_text())
    data["variants"][0]["files"][0]["path"] = "../../etc/passwd"
    manifest.write_text(json.dumps(data))
    with pytest.raises(BundleError, match=r"'\.\.'"):
        Bundle.open(tiny_copy)


def test_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match="no regular file manifest.json"):
        Bundle.open(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        Bundle.open(tmp_path)


def _tar_with(tmp_path: Path, bundle_root: Path, add) -> Path:
    out = tmp_path / "evil.edgebundle"
    with tarfile.open(out, "w") as tar:
        for path in sorted(bundle_root.rglob("*")):
            if path.is_file():
                tar.add(path, arcname=path.relative_to(bundle_root).as_posix())
        add(tar)
    return out


def _file_member(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, io.BytesIO]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, io.BytesIO(data)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tar: tar.addfile(*_file_member("../escape.txt")), "'..'"),
        (lambda tar: tar.addfile(*_file_member("/tmp/absolute.txt")), "absolute"),
        (lambda tar: tar.addfile(_link("evil-link", tarfile.SYMTYPE, "/etc/passwd")), "symlink"),
        (lambda tar: tar.addfile(_link("evil-hard", tarfile.LNKTYPE, "manifest.json")), "hardlink"),
        (lambda tar: tar.addfile(_link("dev", tarfile.CHRTYPE, "")), "special file"),
    ],
    ids=["dotdot", "absolute", "symlink", "hardlink", "device"],
)
def test_hostile_archive_members_are_refused_before_extraction(tiny_bundle, tmp_path, monkeypatch, make, message):
    archive = _tar_with(tmp_path, tiny_bundle.root, make)
    # Extraction gets a temp dir of its own: a shared /tmp sees other runs' bundles come and go.
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))
    with pytest.raises(BundleError, match=message):
        Bundle.open(archive)
    assert not Path("/tmp/absolute.txt").exists()
    leaked = os.listdir(private_tmp)  # an extraction dir, or "../escape.txt" landing beside one
    assert not leaked, f"extraction left {leaked} behind"


def _link(name: str, kind: bytes, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def test_not_an_archive(tmp_path):
    junk = tmp_path / "junk.edgebundle"
    junk.write_bytes(b"this is not a tar file" * 10)
    with pytest.raises(BundleError, match="not a readable"):
        Bundle.open(junk)


def test_variant_lookup_names_the_choices(tiny_bundle):
    assert tiny_bundle.variant("executorch-int8").recipe.quantization.value == "int8-static"
    assert tiny_bundle.variant(Backend.EXECUTORCH).id == "executorch-int8"
    assert tiny_bundle.variant().id == "onnx-fp32"
    with pytest.raises(BundleError, match="no variant 'tflite-int8'; variants: 'onnx-fp32', 'executorch-int8'"):
        tiny_bundle.variant("tflite-int8")
