"""What a user sees stays put across refactors: every command's --help and the shape of a converted manifest.

The reference files in tests/data/surface/ were written by main before the package moves of the architecture
issue. A change that is meant to alter the surface rewrites them on purpose:

    EDGE_SDK_UPDATE_SURFACE=1 .venv/bin/python -m pytest tests/test_surface_unchanged.py

and the diff of tests/data/surface/ then shows the change in review.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

SURFACE = Path(__file__).parent / "data" / "surface"
UPDATE = os.environ.get("EDGE_SDK_UPDATE_SURFACE") == "1"
sys.path.insert(0, str(Path(__file__).parent / "converters"))


def _check(name: str, text: str) -> None:
    path = SURFACE / name
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"{path} is missing: run with EDGE_SDK_UPDATE_SURFACE=1 once"
    assert text == path.read_text(), f"{name} differs from the recorded surface"


def _commands(group: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [prefix]
    if isinstance(getattr(group, "commands", None), Mapping):  # a group (typer vendors its own click)
        for name in sorted(group.commands):
            found += _commands(group.commands[name], (*prefix, name))
    return found


def test_every_commands_help_is_unchanged():
    import typer
    from typer.testing import CliRunner

    from edge_sdk.apps.cli.main import app

    runner = CliRunner()
    commands = _commands(typer.main.get_command(app))
    assert len(commands) > 20
    for command in commands:
        result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "120", "TERM": "dumb", "NO_COLOR": "1"})
        assert result.exit_code == 0, (command, result.output)
        _check(f"help/{'-'.join(command) or 'edge-sdk'}.txt", result.output)


# Integers that depend on file bytes or on the measuring host: the rest (schema version, samples, ...) must match.
_MEASURED_INTS = {"size", "estimated_peak_bytes", "budget_bytes", "breakdown"}


def _shape(value: Any, key: str = "") -> Any:
    """The manifest with what a machine or a run may change (digests, sizes, measured numbers) abstracted."""
    if isinstance(value, dict):
        return {k: _shape(v, key if key == "breakdown" else k) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [_shape(v, key) for v in value]
    if key in {"sha256", "digest", "measured_on"} and isinstance(value, str):
        return f"<{key}>"
    if isinstance(value, int) and not isinstance(value, bool) and key not in _MEASURED_INTS:
        return value
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    return f"<{type(value).__name__}>"


def _manifest_shape(bundle_root: Path) -> str:
    return json.dumps(_shape(json.loads((bundle_root / "manifest.json").read_text())), indent=1) + "\n"


@pytest.mark.slow
def test_a_tensor_bundles_manifest_is_unchanged(tmp_path):
    torch = pytest.importorskip("torch")
    import edge_sdk

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10))
    x = np.random.default_rng(0).normal(size=(32, 1, 8, 8)).astype(np.float32)
    bundle = edge_sdk.convert(
        model, {"input": x}, backend="onnx", quantize="none,fp16", profile="rpi5", output=tmp_path / "b", name="mlp"
    )
    _check("manifest-onnx.json", _manifest_shape(bundle.root))


@pytest.mark.slow
def test_a_language_model_bundles_manifest_is_unchanged(tmp_path):
    pytest.importorskip("llama_cpp")
    from test_gguf import build_tiny_llama

    import edge_sdk

    build_tiny_llama(tmp_path / "tiny")
    bundle = edge_sdk.convert_llm(
        str(tmp_path / "tiny"), quantize="f16,q8_0", profile="rpi5", output=tmp_path / "b", name="tiny"
    )
    _check("manifest-gguf.json", _manifest_shape(bundle.root))
