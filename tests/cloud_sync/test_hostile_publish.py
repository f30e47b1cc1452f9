"""A publisher's hostile archive gets a 4xx in the OpenAI error shape, and the gateway keeps serving.

Before issue 18, an archive holding a file and then a member under it reached the gateway as a
NotADirectoryError: a 500. The archives below are the fuzzer's and the attack's findings.
"""

from __future__ import annotations

import io
import re
import sys
import tarfile
from pathlib import Path

import httpx
import pytest
from gateway_helpers import PUBLISHER_KEY, auth, publish

sys.path.insert(0, str(Path(__file__).parents[1] / "fuzz"))
from fuzzlib import bundle_seed_dir, sparse_member


def _with(seed: Path, out: Path, extra: bytes) -> Path:
    data = seed.read_bytes().rstrip(b"\x00")
    out.write_bytes(data + b"\x00" * ((-len(data)) % 512) + extra + bytes(1024))
    return out


def _member(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()[:-1024]


@pytest.fixture
def seed_archive(tmp_path) -> Path:
    from edge_sdk.bundle import Bundle

    return Bundle.open(bundle_seed_dir(tmp_path)).pack(tmp_path / "seed.edgebundle")


def test_hostile_archives_get_4xx_in_the_openai_shape(registry_gateway, seed_archive, tmp_path):
    url = registry_gateway
    data = seed_archive.read_bytes()
    a, b, d = (tmp_path / f"{x}.edgebundle" for x in "abd")
    cases = {
        "file-then-child": (_with(seed_archive, a, _member("manifest.json/x", b"x")), "which is a file"),
        "sparse-1GiB": (_with(seed_archive, b, sparse_member("golden/x.npz", 1 << 30)), "sparse"),
        "truncated": (tmp_path / "c.edgebundle", "beyond the end|not a readable"),
        "nested-signature": (_with(seed_archive, d, _member("manifest.sig", b"[" * 3000)), "manifest.sig"),
        "not-a-tar": (tmp_path / "e.edgebundle", "not a readable .edgebundle archive"),
    }
    (tmp_path / "c.edgebundle").write_bytes(data[: len(data) // 2])
    (tmp_path / "e.edgebundle").write_bytes(b"\x1f\x8b" + b"junk" * 300)
    for name, (path, message) in cases.items():
        refused = publish(url, path)
        assert 400 <= refused.status_code < 500, (name, refused.status_code, refused.text)
        error = refused.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
        assert "refusing to publish" in error["message"], (name, error)

        assert re.search(message, error["message"]), (name, error["message"])
    accepted = publish(url, seed_archive)  # the gateway still serves, and the registry took nothing hostile
    assert accepted.status_code == 201, accepted.text
    listing = httpx.get(f"{url}/v1/registry/bundles", headers=auth(PUBLISHER_KEY)).json()["data"]
    assert [(e["name"], e["version"]) for e in listing] == [("fuzz-net", "1.0.0")]
