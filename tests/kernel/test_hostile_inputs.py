"""Hostile manifests, signatures and archives: each is a BundleError naming the problem, never a traceback.

Every case here was found by random mutation (tests/fuzz) or by the attack in issue 18, and stays as a
regression test.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest

from edge_sdk.bundle import Bundle
from edge_sdk.bundle import archive as archive_mod
from edge_sdk.bundle.manifest import parse_manifest
from edge_sdk.bundle.signing import SIGNATURE_NAME, parse_signature
from edge_sdk.errors import BundleError

sys.path.insert(0, str(Path(__file__).parents[1] / "fuzz"))
from fuzzlib import sparse_member

GiB = 1 << 30


@pytest.fixture
def private_tmp(tmp_path, monkeypatch) -> Path:
    """Extraction gets a temp dir of its own, so a test can see every byte it wrote."""
    path = tmp_path / "tmp"
    path.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(path))
    return path


def _bytes_under(path: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in path.rglob("*") if p.is_file())


def _manifest(bundle: Bundle) -> dict:
    return json.loads((bundle.root / "manifest.json").read_bytes())


# ------------------------------------------------------------------------------------------------ manifest
@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nests 100000 levels deep; at most 32"),
        (b'{"schema_version": 1, "x": ' + b'{"a":' * 5_000 + b"1" + b"}" * 5_001, "nests 5001 levels deep"),
        (b'{"schema_version": ' + b"9" * 5_000 + b"}", "has 5000 digits; at most 40"),
        (b'{"schema_version": 1, "v": NaN}', "NaN is not a JSON number"),
        (b'{"schema_version": 1e999}', "out of range: only finite numbers"),
        (b'{"schema_version": 1, "name": "\xff\xfe"}', "not valid JSON"),
        (b"\x00" * 100, "not valid JSON"),
        (b" " * (16 * 1024 * 1024 + 1), "more than the limit of 16777216"),
    ],
    ids=["deep-array", "deep-object", "long-int", "nan", "inf", "not-utf8", "nul", "too-big"],
)
def test_hostile_manifest_bytes_are_bundle_errors(raw, message):
    with pytest.raises(BundleError, match=message):
        parse_manifest(raw)


def test_hostile_values_in_a_valid_manifest(tiny_bundle):
    doc = _manifest(tiny_bundle)
    doc["variants"][0]["files"][0]["size"] = 10**39  # 40 digits: parsed, then refused by a later check
    doc["variants"][0]["files"][0]["path"] = "\ud800"
    raw = json.dumps(doc).encode()
    manifest = parse_manifest(raw)  # a lone surrogate is valid JSON; the path check refuses it
    from edge_sdk.bundle.files import safe_relative

    with pytest.raises(BundleError, match="not valid UTF-8"):
        safe_relative(manifest.variants[0].files[0].path)


# ------------------------------------------------------------------------------------------------ signature
@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"[" * 50_000 + b"]" * 50_000, "more than the limit of 4096|nests"),
        (b"[" * 1_000 + b"]" * 1_000, "nests 1000 levels deep; at most 1"),
        (b'{"algorithm": {"a": 1}, "key_id": "0", "signature": ""}', "nests 2 levels deep"),
        (b"[1, 2]", "must hold a JSON object"),
        (b'{"algorithm": "ed25519", "key_id": 5, "signature": "AA=="}', r"\['key_id'\] missing or not strings"),
        (b'{"algorithm": "rsa", "key_id": "0123456789abcdef", "signature": "AA=="}', "uses 'rsa'"),
        (b'{"algorithm": "ed25519", "key_id": "../../x", "signature": "AA=="}', "key id is 16 hex digits"),
        (b'{"algorithm": "ed25519", "key_id": "0123456789abcdef", "signature": "%%%"}', "not base64"),
        (b'{"algorithm": "ed25519", "key_id": "0123456789abcdef", "signature": "\xc3\xa9"}', "not base64"),
        (b'{"algorithm": "ed25519", "key_id": "0123456789abcdef", "signature": "AA=="}', "is 1 bytes, an Ed25519"),
    ],
)
def test_hostile_signature_files_are_bundle_errors(raw, message):
    with pytest.raises(BundleError, match=message):
        parse_signature(raw)


def test_cli_bundle_verify_with_a_deeply_nested_signature_prints_one_error_line(tiny_copy, tmp_path):
    subprocess.run(
        [sys.executable, "-m", "edge_sdk.cli", "keys", "generate", "-o", str(tmp_path / "k")],
        check=True,
        capture_output=True,
    )
    (tiny_copy / SIGNATURE_NAME).write_bytes(b"[" * 3_000 + b"]" * 3_000)
    run = subprocess.run(
        [sys.executable, "-m", "edge_sdk.cli", "bundle", "verify", str(tiny_copy), "--trust", str(tmp_path / "k.pub")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1
    assert "Traceback" not in run.stderr + run.stdout
    lines = [line for line in (run.stderr + run.stdout).splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "manifest.sig" in lines[0], lines


# ------------------------------------------------------------------------------------------------ archive
def _archive(path: Path, bundle_root: Path, *extra: tuple[tarfile.TarInfo, bytes | None], skip=()) -> Path:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for file in sorted(bundle_root.rglob("*")):
            rel = file.relative_to(bundle_root).as_posix()
            if file.is_file() and rel not in skip:
                tar.add(file, arcname=rel)
        for info, payload in extra:
            tar.addfile(info, io.BytesIO(payload) if payload is not None else None)
    return path


def _member(name: str, data: bytes = b"x", kind: bytes = tarfile.REGTYPE) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    if kind == tarfile.REGTYPE:
        info.size = len(data)
        return info, data
    return info, None


def test_sparse_member_is_refused_before_writing_more_than_its_declared_size(tiny_bundle, tmp_path, private_tmp):
    # The attack of issue 18: a small archive whose sparse member expands to 1 GiB. Its name is a file the
    # manifest lists, so only the sparse check (and the declared size) stand between it and the disk.
    listed = tiny_bundle.manifest.variants[0].files[0].path
    declared = tiny_bundle.manifest.variants[0].files[0].size
    path = _archive(tmp_path / "sparse.edgebundle", tiny_bundle.root, skip={listed})
    data = path.read_bytes().rstrip(b"\x00")
    data = data + b"\x00" * ((-len(data)) % 512) + sparse_member(listed, GiB) + bytes(1024)
    path.write_bytes(data)
    assert path.stat().st_size < 300_000
    with tarfile.open(path) as tar:  # the archive really claims 1 GiB under the listed name
        claimed = {m.name: m.size for m in tar.getmembers()}
    assert claimed[listed] == GiB
    with pytest.raises(BundleError, match=f"{listed}' is a sparse file"):
        Bundle.open(path)
    assert _bytes_under(private_tmp) <= declared
    assert not os.listdir(private_tmp)


def test_a_member_larger_than_the_manifest_says_is_refused_before_writing(tiny_bundle, tmp_path, private_tmp):
    listed = tiny_bundle.manifest.variants[0].files[0].path
    big = b"\x00" * (4 << 20)
    path = _archive(tmp_path / "big.edgebundle", tiny_bundle.root, _member(listed, big), skip={listed})
    with pytest.raises(BundleError, match=f"'{listed}' is {len(big)} bytes, the manifest says 4096"):
        Bundle.open(path)
    assert not os.listdir(private_tmp)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ((_member("golden"), _member("golden/extra.bin")), "is a file under 'golden', which is a file"),
        ((_member("x"), _member("x/y", kind=tarfile.DIRTYPE)), "is a directory under 'x', which is a file"),
        ((_member("unlisted.bin"),), "archive holds 'unlisted.bin', which its manifest does not list"),
        ((_member("manifest.json"),), "archive holds 'manifest.json' twice"),
        ((_member(SIGNATURE_NAME, b"s" * 5000),), "manifest.sig is 5000 bytes, more than the limit of 4096"),
    ],
    ids=["file-then-child", "file-then-dir", "unlisted", "repeated", "big-signature"],
)
def test_inconsistent_archives_are_refused_before_writing(tiny_bundle, tmp_path, private_tmp, extra, message):
    path = _archive(tmp_path / "bad.edgebundle", tiny_bundle.root, *extra)
    with pytest.raises(BundleError, match=message):
        Bundle.open(path)
    assert not os.listdir(private_tmp)


def test_member_count_is_capped_while_reading_headers(tiny_bundle, tmp_path, monkeypatch, private_tmp):
    monkeypatch.setattr(archive_mod, "MAX_MEMBERS", 50)
    dirs = [_member(f"d{i}", kind=tarfile.DIRTYPE) for i in range(60)]
    path = _archive(tmp_path / "many.edgebundle", tiny_bundle.root, *dirs)
    with pytest.raises(BundleError, match="more than 50 members"):
        Bundle.open(path)


def test_truncated_compressed_and_empty_archives_are_bundle_errors(tiny_bundle, tmp_path, private_tmp):
    packed = tiny_bundle.pack(tmp_path / "ok.edgebundle").read_bytes()
    gz = tmp_path / "gz.edgebundle"
    with tarfile.open(gz, "w:gz") as tar:
        tar.add(tiny_bundle.root, arcname=".")
    not_tar = "is not a readable .edgebundle archive .an uncompressed tar."
    cases = {
        "truncated-in-data": (packed[: len(packed) // 2], "beyond the end of the"),
        "truncated-in-header": (packed[:700], not_tar + "|beyond the end of the"),
        "empty": (b"", not_tar + ": empty file"),
        "gzip": (gz.read_bytes(), not_tar),
        "gzip-cut": (gz.read_bytes()[:-100], not_tar),
    }
    for name, (data, message) in cases.items():
        path = tmp_path / f"{name}.edgebundle"
        path.write_bytes(data)
        with pytest.raises(BundleError, match=message):
            Bundle.open(path)
    assert not os.listdir(private_tmp)


def test_member_data_beyond_the_end_of_the_archive_is_refused(tiny_bundle, tmp_path, private_tmp):
    packed = tiny_bundle.pack(tmp_path / "ok.edgebundle").read_bytes()
    listed = tiny_bundle.manifest.variants[0].files[0].path
    with tarfile.open(tmp_path / "ok.edgebundle") as tar:
        member = tar.getmember(listed)
    cut = tmp_path / "cut.edgebundle"
    cut.write_bytes(packed[: member.offset_data + 100])
    with pytest.raises(BundleError, match="beyond the end|not a bundle"):
        Bundle.open(cut)
    assert not os.listdir(private_tmp)


def test_a_valid_archive_still_round_trips(tiny_bundle, tmp_path, private_tmp):
    reopened = Bundle.open(tiny_bundle.pack(tmp_path / "ok.edgebundle"))
    assert reopened.manifest == tiny_bundle.manifest
    del reopened
    shutil.rmtree(private_tmp, ignore_errors=True)
