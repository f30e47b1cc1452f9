"""The `edge-sdk` commands as a user runs them: output a person reads, exit codes a script checks."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from edge_sdk.apps.cli.main import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), env={"COLUMNS": "200"})


def test_help_lists_the_commands():
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("convert", "inspect", "verify", "run", "pack", "profiles"):
        assert command in result.output


@pytest.mark.slow
def test_convert_a_factory_file_then_inspect_run_verify(tmp_path):
    script = tmp_path / "model.py"
    script.write_text(
        "import torch\nfrom torch import nn\n"
        "def build():\n    torch.manual_seed(0)\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))\n"
    )
    out = tmp_path / "bundle"
    result = invoke(
        "convert",
        f"{script}:build",
        "--input-shape",
        "1x1x8x8",
        "-q",
        "none,int8-dynamic",
        "-p",
        "rpi5",
        "-o",
        str(out),
        "--name",
        "mlp",
    )
    assert result.exit_code == 0, result.output
    assert "onnx-int8-dynamic" in result.output and "fits" in result.output

    inspected = invoke("inspect", str(out))
    assert inspected.exit_code == 0
    assert "input: float32[batchx1x8x8]" in inspected.output
    assert "cosine_similarity" in inspected.output
    assert "measured on" in inspected.output  # int8 kernels differ by CPU: the report names the one that measured
    manifest = json.loads(invoke("inspect", str(out), "--json").output)
    assert [v["id"] for v in manifest["variants"]] == ["onnx-none", "onnx-int8-dynamic"]

    x = tmp_path / "x.npz"
    np.savez(x, input=np.zeros((3, 1, 8, 8), np.float32))
    ran = invoke("run", str(out), "--input", str(x), "-o", str(tmp_path / "y.npz"))
    assert ran.exit_code == 0, ran.output
    assert "output: float32[3x10]" in ran.output
    assert np.load(tmp_path / "y.npz")["output"].shape == (3, 10)

    verified = invoke("verify", str(out), "--run")
    assert verified.exit_code == 0, verified.output
    assert verified.output.count("golden set") == 2


def test_verify_exits_nonzero_on_a_tampered_bundle(bundle_copy):
    model = next(bundle_copy.glob("variants/*/model.onnx"))
    model.write_bytes(model.read_bytes()[:-1] + b"\x00")
    result = invoke("verify", str(bundle_copy))
    assert result.exit_code == 1
    assert "error:" in result.output and "model.onnx" in result.output
    assert "Traceback" not in result.output


def test_run_with_wrong_shape_says_what_is_expected(onnx_bundle, tmp_path):
    x = tmp_path / "x.npz"
    np.savez(x, input=np.zeros((1, 64), np.float32))
    result = invoke("run", str(onnx_bundle.root), "--input", str(x))
    assert result.exit_code == 1
    assert "expected input: float32[batchx1x8x8]" in result.output


def test_convert_refuses_a_profile_typo_and_an_unknown_quantization(tmp_path):
    result = invoke("convert", "zoo:digits-cnn", "-p", "jetson-orin", "-o", str(tmp_path / "b"))
    assert result.exit_code == 1
    assert "unknown device profile 'jetson-orin'" in result.output
    result = invoke("convert", "zoo:digits-cnn", "-q", "int3", "-o", str(tmp_path / "b"))
    assert result.exit_code == 1
    assert "unknown quantization 'int3'" in result.output


def test_pack_and_verify_the_archive(onnx_bundle, tmp_path):
    result = invoke("pack", str(onnx_bundle.root), "-o", str(tmp_path / "d"))
    assert result.exit_code == 0
    assert invoke("verify", str(tmp_path / "d.edgebundle")).exit_code == 0


def test_install_models_rollback(onnx_bundle, tmp_path):
    store = str(tmp_path / "store")
    result = invoke("install", str(onnx_bundle.root), "--store", store)
    assert result.exit_code == 0, result.output
    assert result.output.count("golden") >= 4  # every variant re-checked before activation
    models = invoke("models", "--store", store)
    assert models.exit_code == 0 and "digits-cnn" in models.output and "1.0.0" in models.output
    again = invoke("rollback", "digits-cnn", "--store", store)
    assert again.exit_code == 1 and "error:" in again.output


def test_daemon_unit_drains_longer_than_the_timeout(tmp_path):
    config = tmp_path / "daemon.toml"
    config.write_text("drain-timeout = 15\n")
    result = invoke("daemon", "unit", "--config", str(config))
    assert result.exit_code == 0
    assert "TimeoutStopSec=25" in result.output and "User=edge-sdk" in result.output
    assert f"serve --config {config} --store /var/lib/edge-sdk" in result.output


def test_a_gguf_goes_to_other_engines_only_from_a_hugging_face_directory(tmp_path):
    result = invoke("convert", "zoo:smollm2", "-b", "gguf,onnx", "-q", "q4_0,f32", "-o", str(tmp_path / "b"))
    assert result.exit_code == 1
    assert "onnxruntime-genai language-model exporter reads a Hugging Face directory" in result.output
    assert not (tmp_path / "b").exists()


@pytest.mark.slow
def test_language_model_bundle_verifies_and_installs(tmp_path):
    """GGUF bundles carry no golden set: verify --run and install name the skip instead of failing."""
    from converters.gguf.zoo import smollm2_as_shipped

    bundle = smollm2_as_shipped(tmp_path / "smollm2")
    verified = invoke("verify", str(bundle.root), "--run")
    assert verified.exit_code == 0, verified.output
    assert "skip" in verified.output and "gguf-q4_1" in verified.output
    installed = invoke("install", str(bundle.root), "--store", str(tmp_path / "store"))
    assert installed.exit_code == 0, installed.output
    assert "active 1.0.0" in installed.output
