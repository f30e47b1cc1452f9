"""`edge-sdk activate`, `models rm`, `models gc`: a store that does not fill the card, and a daemon that notices."""

from __future__ import annotations

import re

import pytest
from store_versions import invoke, versioned  # tests/: beside conftest.py

from edge_sdk.store import BundleStore


@pytest.fixture
def four_versions(onnx_bundle, tmp_path) -> str:
    """digits-cnn 1.0.0 .. 1.3.0 installed (no golden re-check: the bytes are the tested ones); 1.3.0 active."""
    store = tmp_path / "store"
    for version in ("1.0.0", "1.1.0", "1.2.0", "1.3.0"):
        result = invoke("install", str(versioned(onnx_bundle.root, version, tmp_path)), "--store", str(store),
                        "--no-check")  # fmt: skip
        assert result.exit_code == 0, result.output
    return str(store)


def test_activate_a_chosen_version_and_the_old_one_becomes_previous(four_versions):
    result = invoke("activate", "digits-cnn", "1.1.0", "--store", four_versions)
    assert result.exit_code == 0, result.output
    assert "active 1.1.0, previous 1.3.0" in result.output
    model = BundleStore(four_versions).list()[0]
    assert (model.active, model.previous) == ("1.1.0", "1.3.0")
    unknown = invoke("activate", "digits-cnn", "9.9.9", "--store", four_versions)
    assert unknown.exit_code == 1 and "no installed version '9.9.9'" in unknown.output and "1.2.0" in unknown.output


def test_the_active_version_cannot_be_removed_but_another_can(four_versions):
    refused = invoke("models", "rm", "digits-cnn@1.3.0", "--store", four_versions)
    assert refused.exit_code == 1
    assert "1.3.0 is the active version and cannot be removed" in refused.output
    assert BundleStore(four_versions).list()[0].versions == ("1.0.0", "1.1.0", "1.2.0", "1.3.0")
    removed = invoke("models", "--store", four_versions, "rm", "digits-cnn@1.0.0")  # --store before rm works too
    assert removed.exit_code == 0, removed.output
    assert "removed digits-cnn 1.0.0" in removed.output
    assert BundleStore(four_versions).list()[0].versions == ("1.1.0", "1.2.0", "1.3.0")


def test_rm_of_a_model_removes_every_version(four_versions):
    result = invoke("models", "rm", "digits-cnn", "--store", four_versions)
    assert result.exit_code == 0, result.output
    assert "versions 1.0.0, 1.1.0, 1.2.0, 1.3.0" in result.output
    assert BundleStore(four_versions).list() == []
    again = invoke("models", "rm", "digits-cnn", "--store", four_versions)
    assert "names no version" in invoke("models", "rm", "digits-cnn@", "--store", four_versions).output
    assert again.exit_code == 1 and "no model 'digits-cnn' is installed" in again.output


def test_gc_keeps_the_newest_and_never_the_active_or_previous(four_versions):
    assert invoke("activate", "digits-cnn", "1.1.0", "--store", four_versions).exit_code == 0  # previous: 1.3.0
    dry = invoke("models", "gc", "--keep", "0", "--dry-run", "--store", four_versions)
    assert dry.exit_code == 0, dry.output
    assert re.findall(r"would remove digits-cnn (\S+)", dry.output) == ["1.0.0", "1.2.0"]
    assert len(BundleStore(four_versions).list()[0].versions) == 4, "--dry-run removed something"
    result = invoke("models", "gc", "--keep", "0", "--store", four_versions)
    assert result.exit_code == 0, result.output
    model = BundleStore(four_versions).list()[0]
    assert model.versions == ("1.1.0", "1.3.0") and (model.active, model.previous) == ("1.1.0", "1.3.0")
    assert invoke("rollback", "digits-cnn", "--store", four_versions).exit_code == 0  # previous survived gc


def test_gc_keep_n_keeps_the_n_newest(four_versions):
    assert invoke("activate", "digits-cnn", "1.0.0", "--store", four_versions).exit_code == 0  # previous 1.3.0
    assert invoke("models", "gc", "--keep", "2", "--store", four_versions).exit_code == 0
    assert BundleStore(four_versions).list()[0].versions == ("1.0.0", "1.2.0", "1.3.0")
