"""The bundle registry over HTTP: publish, list, download with Range, and a download cut mid-way then resumed."""

from __future__ import annotations

import hashlib

import httpx
import pytest
from gateway_helpers import DEVICE_KEY, PUBLISHER_KEY, CuttingProxy, auth, publish

from cloud_sync.registry import Registry
from cloud_sync.sync import RegistryClient
from edge_sdk.errors import RegistryError, TransferError


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_publish_list_download_with_range(registry_gateway, packed_versions, tmp_path):
    url, path, registry_dir = registry_gateway, packed_versions["1.0.0"], tmp_path / "registry"
    data = path.read_bytes()
    first = publish(url, path)
    assert first.status_code == 201, first.text
    entry = first.json()
    assert (entry["name"], entry["version"], entry["size"]) == ("digits-cnn", "1.0.0", len(data))
    assert entry["sha256"] == sha256(data) and entry["signed"] is False
    assert publish(url, path).status_code == 200  # the same bytes again: accepted, nothing changes
    assert publish(url, packed_versions["1.1.0"]).status_code == 201

    listing = httpx.get(f"{url}/v1/registry/bundles", headers=auth(DEVICE_KEY)).json()["data"]
    assert [(e["name"], e["version"]) for e in listing] == [("digits-cnn", "1.0.0"), ("digits-cnn", "1.1.0")]
    assert httpx.get(f"{url}/v1/registry/bundles?name=other", headers=auth(DEVICE_KEY)).json()["data"] == []

    whole = httpx.get(f"{url}/v1/registry/bundles/digits-cnn/1.0.0", headers=auth(DEVICE_KEY))
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["etag"] == f'"{sha256(data)}"' and whole.headers["accept-ranges"] == "bytes"
    assert whole.headers["repr-digest"].startswith("sha-256=:")

    part = httpx.get(f"{url}/v1/registry/bundles/digits-cnn/1.0.0", headers={**auth(DEVICE_KEY), "Range": "bytes=100-"})
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes 100-{len(data) - 1}/{len(data)}"
    assert part.content == data[100:]
    past = httpx.get(
        f"{url}/v1/registry/bundles/digits-cnn/1.0.0", headers={**auth(DEVICE_KEY), "Range": f"bytes={len(data)}-"}
    )
    assert past.status_code == 416 and past.headers["content-range"] == f"bytes */{len(data)}"
    stale = httpx.get(  # If-Range with another digest: the whole file, not a range of something else
        f"{url}/v1/registry/bundles/digits-cnn/1.0.0",
        headers={**auth(DEVICE_KEY), "Range": "bytes=100-", "If-Range": '"0000"'},
    )
    assert stale.status_code == 200 and stale.content == data

    lost = registry_dir / "bundles" / "digits-cnn" / "1.1.0.edgebundle"
    lost.unlink()  # a disk accident on the server
    gone = httpx.get(f"{url}/v1/registry/bundles/digits-cnn/1.1.0", headers=auth(DEVICE_KEY))
    assert gone.status_code == 500 and "its file" in gone.json()["error"]["message"]
    assert publish(url, packed_versions["1.1.0"]).status_code == 200  # the same bytes again put it back
    assert lost.read_bytes() == packed_versions["1.1.0"].read_bytes()

    missing = httpx.get(f"{url}/v1/registry/bundles/digits-cnn/9.9.9", headers=auth(DEVICE_KEY))
    assert missing.status_code == 404
    assert "no published version '9.9.9'; published: '1.0.0', '1.1.0'" in missing.json()["error"]["message"]


def test_publish_refusals(registry_gateway, packed_versions, tmp_path):
    url = registry_gateway
    assert publish(url, packed_versions["1.0.0"], key=DEVICE_KEY).status_code == 403  # devices only pull
    assert publish(url, packed_versions["1.0.0"], key="not-a-key-at-all-000").status_code == 401

    broken = tmp_path / "broken.edgebundle"
    data = bytearray(packed_versions["1.0.0"].read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped bit inside a weights file
    broken.write_bytes(bytes(data))
    refused = publish(url, broken)
    assert refused.status_code == 422, refused.text
    assert "refusing to publish" in refused.json()["error"]["message"]

    for status in (201, 200):  # an upload is not held for idempotency: each one is streamed and checked
        with packed_versions["1.0.0"].open("rb") as fh:
            headers = {**auth(PUBLISHER_KEY), "Idempotency-Key": "upload-1"}
            again = httpx.post(f"{url}/v1/registry/bundles", content=fh, headers=headers, timeout=60)
        assert again.status_code == status and "idempotent-replayed" not in again.headers
    # the same name and version with other bytes: a device that downloaded 1.0.0 must never see it change
    registry = Registry(tmp_path / "other")
    registry.publish(packed_versions["1.1.0"])
    relabelled = tmp_path / "relabelled.edgebundle"
    relabelled.write_bytes(packed_versions["1.0.0"].read_bytes() + b"\0" * 1024)  # tar padding: same bundle
    conflict = publish(url, relabelled)
    assert conflict.status_code == 409
    assert "already published with other contents" in conflict.json()["error"]["message"]
    assert httpx.post(f"{url}/v1/registry/bundles", content=b"", headers=auth(PUBLISHER_KEY)).status_code == 400
    with pytest.raises(RegistryError, match="no model 'nope' is published; published: 'digits-cnn'"):
        registry.entry("nope", "1.0.0")


def test_download_cut_midway_resumes_with_range(registry_gateway, packed_versions, tmp_path):
    path = packed_versions["1.0.0"]
    data = path.read_bytes()
    assert publish(registry_gateway, path).status_code == 201
    proxy = CuttingProxy(registry_gateway, cut_after=len(data) // 2)
    dest = tmp_path / "partial.edgebundle.part"
    try:
        with RegistryClient(proxy.url, api_key=DEVICE_KEY, attempts=1) as client:
            (entry,) = client.list()
            with pytest.raises(TransferError, match=r"failed 1 times .*bytes are kept in .*next sync resumes"):
                client.download(entry, dest)
        assert proxy.cut_done
        kept = dest.stat().st_size
        assert 0 < kept < len(data) and data.startswith(dest.read_bytes())

        with RegistryClient(proxy.url, api_key=DEVICE_KEY, attempts=1) as client:
            done = client.download(entry, dest)
    finally:
        proxy.close()
    assert sha256(dest.read_bytes()) == entry.sha256 == sha256(data)
    assert (done.resumed_from, done.received) == (kept, len(data) - kept)
    # the server sent only the missing part again (plus headers), not the whole file
    assert proxy.bytes_after_cut < len(data) - kept + 4096


def test_download_retries_a_cut_within_one_run(registry_gateway, packed_versions, tmp_path):
    path = packed_versions["1.1.0"]
    assert publish(registry_gateway, path).status_code == 201
    proxy = CuttingProxy(registry_gateway, cut_after=path.stat().st_size // 3)
    try:
        with RegistryClient(proxy.url, api_key=DEVICE_KEY, attempts=3, backoff_s=0.05) as client:
            (entry,) = client.list()
            done = client.download(entry, tmp_path / "f.part")
    finally:
        proxy.close()
    assert proxy.cut_done and done.resumed_from == 0
    assert done.received == entry.size  # the cut part plus the rest: resumed, not restarted
    assert sha256((tmp_path / "f.part").read_bytes()) == entry.sha256


def test_download_retries_a_server_busy_answer_and_resumes(packed_versions, tmp_path):
    """A 503 from a proxy in front of the registry, after part of the file came: the next try resumes."""
    from receiver_app import serving
    from starlette.applications import Starlette
    from starlette.responses import FileResponse, JSONResponse
    from starlette.routing import Route

    from cloud_sync.registry import RegistryEntry

    path = packed_versions["1.0.0"]
    digest, answers = sha256(path.read_bytes()), []

    async def bundle(request):
        answers.append(request.headers.get("range"))
        if len(answers) == 1:
            return JSONResponse({"error": {"message": "upstream busy"}}, status_code=503)
        return FileResponse(path, headers={"ETag": f'"{digest}"'})

    async def alive(_request):
        return JSONResponse({})

    app = Starlette(routes=[Route("/v1/registry/bundles/digits-cnn/1.0.0", bundle), Route("/executions", alive)])
    entry = RegistryEntry("digits-cnn", "1.0.0", digest, path.stat().st_size, False, None, 0.0)
    dest = tmp_path / "f.part"
    dest.write_bytes(path.read_bytes()[:1000])  # what an earlier run kept
    with serving(app) as url, RegistryClient(url, attempts=3, backoff_s=0.05) as client:
        done = client.download(entry, dest)
    assert answers == ["bytes=1000-", "bytes=1000-"]
    assert done.resumed_from == 1000 and sha256(dest.read_bytes()) == digest
