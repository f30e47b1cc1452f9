"""GGUF bundles carry a golden set (tokens and logits) that `verify --run` re-checks on the device."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

import edge_sdk
from edge_sdk.apps.cli.main import app


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    from test_gguf import build_tiny_llama  # the tiny LLaMA of the GGUF tests (same directory)

    directory = tmp_path_factory.mktemp("tiny") / "tiny-llama"
    build_tiny_llama(directory)
    return edge_sdk.convert_llm(directory, quantize="f16,q8_0", output=tmp_path_factory.mktemp("b") / "tiny")


def test_each_gguf_variant_records_and_reproduces_its_golden_logits(tiny_bundle):
    golden = tiny_bundle.golden()
    assert golden is not None and golden.inputs["tokens"].ndim == 1 and len(golden.inputs["tokens"]) == 16
    for variant in tiny_bundle.variants:
        recorded = tiny_bundle.golden_outputs(variant)["logits"]
        assert recorded.shape[0] == 16
        report = edge_sdk.check_golden(tiny_bundle, variant.id)
        assert report.passed and report.metric("top1_agreement").value == 1.0


def test_verify_run_checks_a_gguf_bundle_and_catches_altered_logits(tiny_bundle, tmp_path):
    result = CliRunner().invoke(app, ["verify", str(tiny_bundle.root), "--run"])
    assert result.exit_code == 0, result.output
    assert result.output.count("golden set") == 2 and "skip" not in result.output
    # the same bundle, but recorded outputs that this model does not produce: the check must fail
    copy = tmp_path / "copy"
    shutil.copytree(tiny_bundle.root, copy)
    variant = tiny_bundle.variants[0]
    path = copy / variant.golden_outputs.path
    logits = np.load(path)["logits"]
    np.savez(path, logits=logits[:, ::-1].copy())  # a different model's numbers
    from edge_sdk.bundle import Bundle
    from edge_sdk.bundle.files import sha256_file

    manifest = (copy / "manifest.json").read_text()
    manifest = manifest.replace(variant.golden_outputs.sha256, sha256_file(path)).replace(
        f'"size": {variant.golden_outputs.size}', f'"size": {path.stat().st_size}'
    )
    (copy / "manifest.json").write_text(manifest)
    assert not edge_sdk.check_golden(Bundle.open(copy), variant.id).passed
