"""`edge-sdk sync` against a real gateway: newer versions installed, equal skipped, lower and tampered refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from gateway_helpers import DEVICE_KEY, CuttingProxy, publish
from typer.testing import CliRunner

from cloud_sync.registry import Registry
from cloud_sync.sync import DOWNLOADS, Outcome, RegistryClient, _one_sync_at_a_time, sync
from edge_sdk.apps.cli.main import app
from edge_sdk.bundle import Bundle, archive
from edge_sdk.bundle.signing import generate_keypair, load_trusted, write_signature
from edge_sdk.errors import RegistryError, StoreError, TransferError
from edge_sdk.store import BundleStore

NAME = "digits-cnn"


def _sync(url: str, store: BundleStore, **options):
    with RegistryClient(url, api_key=DEVICE_KEY) as client:
        return sync(client, store, **options)


def test_sync_installs_newer_skips_equal_refuses_lower(registry_gateway, packed_versions, tmp_path):
    url = registry_gateway
    for version in ("1.0.0", "1.1.0"):
        assert publish(url, packed_versions[version]).status_code == 201
    store = BundleStore(tmp_path / "device")

    (first,) = _sync(url, store)
    assert (first.outcome, first.active_before, first.active_after) == (Outcome.INSTALLED, None, "1.1.0")
    assert first.download is not None and first.download.received == packed_versions["1.1.0"].stat().st_size
    assert store.active(NAME).manifest.version == "1.1.0"
    assert not list((store.root / DOWNLOADS).glob("*.part"))  # the download is gone once installed

    (again,) = _sync(url, store)
    assert (again.outcome, again.download) == (Outcome.UP_TO_DATE, None)

    assert publish(url, packed_versions["2.0.0"]).status_code == 201
    (newer,) = _sync(url, store, names=[NAME])
    assert (newer.outcome, newer.active_before, newer.active_after) == (Outcome.INSTALLED, "1.1.0", "2.0.0")
    assert [(m.active, m.previous) for m in store.list()] == [("2.0.0", "1.1.0")]

    (lower,) = _sync(url, store, names=[NAME], version="1.0.0")
    assert lower.outcome is Outcome.REFUSED and lower.download is None  # refused before a byte is fetched
    assert "digits-cnn 1.0.0, older than the active 2.0.0: refusing a downgrade" in lower.detail
    assert store.active(NAME).manifest.version == "2.0.0"

    store.rollback(NAME)  # the operator backs out of 2.0.0: a sync must not bring it back
    (held,) = _sync(url, store)
    assert (held.outcome, held.active_after) == (Outcome.HELD, "1.1.0") and "rolled back to 1.1.0" in held.detail
    assert store.active(NAME).manifest.version == "1.1.0"
    (asked,) = _sync(url, store, names=[NAME], version="2.0.0")  # unless asked for by name and version
    assert (asked.outcome, asked.active_after) == (Outcome.INSTALLED, "2.0.0")


def test_sync_cut_midway_resumes_in_the_next_run(registry_gateway, packed_versions, tmp_path):
    packed = packed_versions["2.0.0"]
    assert publish(registry_gateway, packed).status_code == 201
    store = BundleStore(tmp_path / "device")
    proxy = CuttingProxy(registry_gateway, cut_after=packed.stat().st_size // 2)
    try:
        with RegistryClient(proxy.url, api_key=DEVICE_KEY, attempts=1) as client:
            with pytest.raises(TransferError, match="the next sync resumes from there"):
                sync(client, store)
            assert store.list() == []  # nothing half-installed
            (report,) = sync(client, store)
    finally:
        proxy.close()
    assert report.outcome is Outcome.INSTALLED and report.active_after == "2.0.0"
    assert report.download is not None and report.download.resumed_from > 0
    assert report.download.resumed_from + report.download.received == packed.stat().st_size
    assert store.active(NAME).manifest.version == "2.0.0"  # every file's digest checked by the store


def test_one_sync_at_a_time(registry_gateway, tmp_path):
    store = BundleStore(tmp_path / "device")
    with _one_sync_at_a_time(store.root / DOWNLOADS), pytest.raises(StoreError, match="another sync is downloading"):
        _sync(registry_gateway, store)


def test_sync_refuses_when_the_registry_has_only_older(registry_gateway, packed_versions, tmp_path):
    assert publish(registry_gateway, packed_versions["1.1.0"]).status_code == 201
    store = BundleStore(tmp_path / "device")
    store.install(packed_versions["2.0.0"])  # installed by hand, newer than anything published
    (report,) = _sync(registry_gateway, store)
    assert report.outcome is Outcome.REFUSED
    assert "offers digits-cnn 1.1.0, older than the active 2.0.0" in report.detail


def test_sync_refuses_a_tampered_download(registry_gateway, packed_versions, tmp_path):
    assert publish(registry_gateway, packed_versions["1.0.0"]).status_code == 201
    served = tmp_path / "registry" / "bundles" / NAME / "1.0.0.edgebundle"
    data = bytearray(served.read_bytes())
    data[len(data) // 2] ^= 0x01  # changed on the server after publishing: same size, other bytes
    served.write_bytes(bytes(data))

    store = BundleStore(tmp_path / "device")
    (report,) = _sync(registry_gateway, store)
    assert report.outcome is Outcome.REFUSED
    assert "corrupted or tampered" in report.detail and "nothing installed" in report.detail
    assert store.list() == []
    assert not list((store.root / DOWNLOADS).glob("*.part"))


def test_cli_publish_then_sync_with_golden_check(key_files, registry_gateway, packed_versions, onnx_bundle, tmp_path):
    runner = CliRunner()
    url, device = registry_gateway, tmp_path / "device"
    published = runner.invoke(
        app, ["cloud", "publish", str(onnx_bundle.root), "--to", url, "--key-file", str(key_files["publisher"])]
    )
    assert published.exit_code == 0, published.output
    assert f"published {NAME} " in published.output
    again = runner.invoke(
        app, ["cloud", "publish", str(onnx_bundle.root), "--to", url, "--key-file", str(key_files["publisher"])]
    )
    assert "already published (same bytes)" in again.output
    denied = runner.invoke(
        app, ["cloud", "publish", str(packed_versions["2.0.0"]), "--to", url, "--key-file", str(key_files["device"])]
    )
    assert denied.exit_code == 1 and "may not publish" in denied.output

    args = ["sync", "--from", url, "--store", str(device), "--key-file", str(key_files["device"])]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "golden set" in result.output and "FAIL" not in result.output  # re-checked with this machine's engine
    assert f"installed {NAME}: {NAME} {onnx_bundle.manifest.version} installed and active" in result.output
    assert "up to date" in runner.invoke(app, args).output

    # --json: one document on stdout (the golden checks and the progress bar go to stderr)
    fresh = ["sync", "--from", url, "--store", str(tmp_path / "other"), "--key-file", str(key_files["device"])]
    as_json = runner.invoke(app, [*fresh, "--json"])
    assert as_json.exit_code == 0, as_json.output
    document = json.loads(as_json.stdout)
    assert document["from"] == url and document["store"] == str(tmp_path / "other")
    (report,) = document["reports"]
    assert report["name"] == NAME and report["outcome"] == "installed" and report["active_before"] is None
    assert report["offered"] == report["active_after"] == onnx_bundle.manifest.version
    assert report["downloaded_bytes"] > 0 and report["resumed_from"] == 0 and "golden set" in as_json.stderr

    unsigned = runner.invoke(app, [*args, "--trust", str(_public_key(tmp_path))])
    assert unsigned.exit_code == 0  # up to date: nothing downloaded, so nothing to refuse
    assert publish(url, packed_versions["2.0.0"]).status_code == 201
    refused = runner.invoke(app, [*args, "--trust", str(_public_key(tmp_path))])
    assert refused.exit_code == 1
    assert "lists digits-cnn 2.0.0 as not signed; this device accepts only bundles signed" in refused.output
    assert BundleStore(device).active(NAME).manifest.version == onnx_bundle.manifest.version

    nobody = runner.invoke(app, ["sync", "--from", url, "--store", str(device)])
    assert nobody.exit_code == 1 and "401" in nobody.output and "missing or unknown device key" in nobody.output


def _public_key(tmp_path: Path) -> Path:
    private = tmp_path / "release.key"
    if not private.exists():
        generate_keypair(private)
    return private.with_name("release.key.pub")


def test_signed_bundles_published_listed_and_synced_with_trust(registry_gateway, packed_versions, tmp_path):

    public, key_id = generate_keypair(tmp_path / "release.key")
    trusted = load_trusted(public)
    signed_dir = tmp_path / "signed"

    archive.unpack(packed_versions["2.0.0"], signed_dir)
    write_signature(signed_dir, Bundle.open(signed_dir).manifest, tmp_path / "release.key")

    with pytest.raises(RegistryError, match="refusing to publish: bundle 'digits-cnn' is not signed"):
        Registry(tmp_path / "strict", trust=[trusted]).publish(packed_versions["1.0.0"])
    entry, new = Registry(tmp_path / "strict", trust=[trusted]).publish(signed_dir)
    assert new and entry.signed and entry.key_id == key_id

    signed = Bundle.open(signed_dir).pack(tmp_path / "digits-signed")
    assert publish(registry_gateway, signed).status_code == 201
    with RegistryClient(registry_gateway, api_key=DEVICE_KEY) as client:
        (listed,) = client.list()
    assert (listed.signed, listed.key_id) == (True, key_id)
    store = BundleStore(tmp_path / "device")
    (report,) = _sync(registry_gateway, store, trust=[trusted])
    assert report.outcome is Outcome.INSTALLED and report.active_after == "2.0.0"
