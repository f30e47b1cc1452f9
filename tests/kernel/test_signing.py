"""Signed bundles: a device that trusts keys refuses unsigned, foreign-signed and re-written bundles."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from edge_sdk.apps.cli.main import app
from edge_sdk.bundle import Bundle
from edge_sdk.bundle.signing import generate_keypair, load_trusted, write_signature
from edge_sdk.errors import BundleError, ConfigError
from edge_sdk.store import BundleStore

NAME = "tiny-net"  # what tests/kernel/conftest.py's synthetic bundles are called


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    root = tmp_path_factory.mktemp("keys")
    ours, _ = generate_keypair(root / "ours")
    theirs, _ = generate_keypair(root / "theirs")
    return {"key": root / "ours", "pub": ours, "other_key": root / "theirs", "other_pub": theirs}


def test_signed_bundle_verifies_with_the_right_key_only(tiny_copy, keys):
    write_signature(tiny_copy, Bundle.open(tiny_copy).manifest, keys["key"])
    assert Bundle.open(tiny_copy, trust=[load_trusted(keys["pub"])]).name == NAME
    assert Bundle.open(tiny_copy).name == NAME  # no trust asked: the signature file is allowed
    with pytest.raises(BundleError, match=r"signed by key [0-9a-f]{16}, which is not trusted here"):
        Bundle.open(tiny_copy, trust=[load_trusted(keys["other_pub"])])


def test_unsigned_bundle_is_refused_when_trust_is_required(tiny_copy, keys):
    with pytest.raises(BundleError, match="is not signed"):
        Bundle.open(tiny_copy, trust=[load_trusted(keys["pub"])])


def test_manifest_changed_after_signing_is_refused(tiny_copy, keys):
    write_signature(tiny_copy, Bundle.open(tiny_copy).manifest, keys["key"])
    manifest = json.loads((tiny_copy / "manifest.json").read_text())
    manifest["version"] = "9.9.9"
    (tiny_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="changed after it was signed"):
        Bundle.open(tiny_copy, trust=[load_trusted(keys["pub"])])


def test_tampered_file_in_a_signed_bundle_is_refused(tiny_copy, keys):
    write_signature(tiny_copy, Bundle.open(tiny_copy).manifest, keys["key"])
    model = tiny_copy / Bundle.open(tiny_copy).variant().files[0].path
    data = model.read_bytes()
    model.write_bytes(data[:-1] + bytes([data[-1] ^ 0x01]))  # always a change, whatever the last byte was
    with pytest.raises(BundleError, match="modified or corrupted"):
        Bundle.open(tiny_copy, trust=[load_trusted(keys["pub"])])


def test_keys_are_not_overwritten_and_bad_keys_are_named(tmp_path, keys):
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        generate_keypair(keys["key"])
    assert oct(keys["key"].stat().st_mode & 0o777) == "0o600"
    junk = tmp_path / "junk.pub"
    junk.write_text("not a key")
    with pytest.raises(ConfigError, match="not a PEM public key"):
        load_trusted(junk)


def test_store_with_trust_refuses_unsigned_and_installs_signed(tiny_copy, keys, tmp_path):
    store = BundleStore(tmp_path / "store")
    trusted = [load_trusted(keys["pub"])]
    with pytest.raises(BundleError, match="is not signed"):
        store.install(tiny_copy, trust=trusted)
    assert store.list() == []
    write_signature(tiny_copy, Bundle.open(tiny_copy).manifest, keys["key"])
    assert store.install(tiny_copy, trust=trusted).active == "1.0.0"


def test_store_configured_with_trusted_keys_requires_them_of_every_install(tiny_copy, keys, tmp_path):
    store = BundleStore(tmp_path / "store")
    (store.root / "trusted-keys").mkdir()
    shutil.copy(keys["pub"], store.root / "trusted-keys" / "release.pub")
    with pytest.raises(BundleError, match="is not signed"):
        store.install(tiny_copy)  # no trust asked by the caller: the device's own keys still apply
    write_signature(tiny_copy, Bundle.open(tiny_copy).manifest, keys["other_key"])
    with pytest.raises(BundleError, match="which is not trusted here"):
        store.install(tiny_copy, trust=[load_trusted(keys["other_pub"])])  # a caller's key does not replace them
    write_signature(tiny_copy, Bundle.open(tiny_copy).manifest, keys["key"])
    assert store.install(tiny_copy).active == "1.0.0"


def test_cli_sign_and_verify_an_archive(tiny_bundle, keys, tmp_path):
    runner = CliRunner()
    archive = tiny_bundle.pack(tmp_path / "d.edgebundle")
    assert runner.invoke(app, ["bundle", "sign", str(archive), "--key", str(keys["key"])]).exit_code == 0
    ok = runner.invoke(app, ["bundle", "verify", str(archive), "--trust", str(keys["pub"])])
    assert ok.exit_code == 0, ok.output
    wrong = runner.invoke(app, ["bundle", "verify", str(archive), "--trust", str(keys["other_pub"])])
    assert wrong.exit_code == 1 and "not trusted here" in wrong.output
    unsigned = runner.invoke(app, ["bundle", "verify", str(tiny_bundle.root), "--trust", str(keys["pub"])])
    assert unsigned.exit_code == 1 and "is not signed" in unsigned.output
