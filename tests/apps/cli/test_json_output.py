"""`--json` on every command that reports: one JSON document on stdout, of the shape README "JSON output" documents.

Each test checks the keys and types a script relies on, and that stdout holds nothing but the document (a
progress bar or a golden-check line on stdout would break `| jq`). plan's shape is tested in
tests/converters/test_plan.py, sync's in tests/cloud_sync/test_sync.py (they need a plan run and a gateway).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from edge_sdk.apps.cli.main import app

runner = CliRunner()


def run_json(*args: str, exit_code: int = 0) -> Any:
    result = runner.invoke(app, [*args, "--json"], env={"COLUMNS": "80"})
    assert result.exit_code == exit_code, (result.stdout, result.stderr)
    return json.loads(result.stdout)  # fails if anything but the document went to stdout


def has(document: dict[str, Any], shape: dict[str, type | tuple[type, ...]]) -> None:
    """Every documented key is there with its type (None allowed where the shape says so)."""
    for key, kind in shape.items():
        assert key in document, f"missing {key!r} in {sorted(document)}"
        assert isinstance(document[key], kind), f"{key!r}: {document[key]!r} is not {kind}"


def test_models_json_lists_installed_models(onnx_bundle, tmp_path):
    store = tmp_path / "store"
    assert run_json("models", "--store", str(store)) == {"store": str(store), "models": []}
    from edge_sdk.store import BundleStore

    BundleStore(store).install(onnx_bundle.root)
    document = run_json("models", "--store", str(store))
    (model,) = document["models"]
    assert model == {"name": "digits-cnn", "active": "1.0.0", "previous": None, "versions": ["1.0.0"]}


def test_profiles_json_lists_and_shows_every_field():
    listed = run_json("profiles", "list")["profiles"]
    ids = [p["id"] for p in listed]
    assert {"rpi4", "rpi5", "jetson-orin-nano", "host"} <= set(ids)
    shown = run_json("profiles", "show", "rpi4")
    assert shown == next(p for p in listed if p["id"] == "rpi4")
    has(shown, {"id": str, "name": str, "cpu": dict, "memory": dict, "backends": dict})
    has(shown["memory"], {"total_mb": int, "budget_mb": int, "bandwidth_gbps": (int, float), "source": str})


def test_verify_json_says_valid_runs_golden_sets_and_reports_damage(bundle_copy):
    ok = run_json("verify", str(bundle_copy))
    has(ok, {"bundle": str, "valid": bool, "name": str, "version": str, "files": int})
    assert ok["valid"] and ok["error"] is None and ok["golden"] is None

    ran = run_json("verify", str(bundle_copy), "--run")
    assert ran["valid"] and len(ran["golden"]) == 4
    for entry in ran["golden"]:
        has(entry, {"variant": str, "result": str, "detail": str, "samples": int, "passed": bool})
        assert entry["result"] == "ok" and entry["passed"]

    weights = next(bundle_copy.glob("**/*.onnx"))
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    broken = run_json("verify", str(bundle_copy), exit_code=1)
    assert broken["valid"] is False and "sha256" in broken["error"] and broken["name"] is None


def test_fit_json_gives_a_report_per_variant(onnx_bundle):
    document = run_json("fit", str(onnx_bundle.root), "-p", "rpi4", "--no-measure")
    assert set(document) == {v.id for v in onnx_bundle.variants}
    for report in document.values():
        has(report, {"profile": str, "fits": bool, "estimated_peak_bytes": int, "budget_bytes": int})
        has(report, {"reasons": list, "breakdown": dict, "suggestions": list})


def test_run_json_carries_values_shape_and_classes(onnx_bundle, digits, tmp_path):
    inputs = tmp_path / "in.npz"
    np.savez(inputs, input=digits.test_x[:4])
    document = run_json("run", str(onnx_bundle.root), "-i", str(inputs), "--variant", "onnx-int8-static")
    has(document, {"bundle": str, "version": str, "variant": str, "outputs": dict})
    assert document["variant"] == "onnx-int8-static" and document["saved_to"] is None
    (output,) = document["outputs"].values()
    has(output, {"dtype": str, "shape": list, "values": list, "head": list, "min": float, "max": float})
    assert output["shape"] == [4, 10] and np.asarray(output["values"]).shape == (4, 10)
    assert output["classes"] is None  # a tensor-task bundle: logits are not called classes
    assert output["head"] == np.asarray(output["values"]).reshape(-1)[:8].tolist()


def test_run_summarises_a_large_output_instead_of_printing_it(onnx_bundle, digits, tmp_path):
    inputs = tmp_path / "in.npz"
    np.savez(inputs, input=digits.test_x[:200])  # 2,000 logits: more than --json carries in full
    document = run_json("run", str(onnx_bundle.root), "-i", str(inputs))
    (output,) = document["outputs"].values()
    assert output["values"] is None and len(output["head"]) == 8 and output["shape"] == [200, 10]
    assert output["min"] <= output["mean"] <= output["max"]
    text = runner.invoke(app, ["run", str(onnx_bundle.root), "-i", str(inputs)], env={"COLUMNS": "200"})
    assert text.exit_code == 0, text.output
    assert ", …]" in text.stdout and " min " in text.stdout and " mean " in text.stdout


def test_flash_json_dry_run_and_result(onnx_bundle, tmp_path):
    card = tmp_path / "card"
    planned = run_json("flash", str(onnx_bundle.root), "--to", f"dir://{card}", "-p", "rpi4", "--dry-run")
    has(planned, {"bundle": dict, "dry_run": bool, "targets": list})
    has(planned["bundle"], {"name": str, "version": str, "variants": list, "size_bytes": int, "sha256": str})
    (target,) = planned["targets"]
    has(target, {"target": str, "board": list, "steps": list, "fit": list, "fits": bool})
    assert target["target"] == f"dir://{card}" and target["profile"] == "rpi4" and not card.exists()
    has(target["fit"][0], {"variant": str, "fits": bool, "estimated_peak_bytes": int, "reasons": list})

    done = run_json("flash", str(onnx_bundle.root), "--to", f"dir://{card}", "--activate", "--no-device-check")
    assert done["dry_run"] is False and (done["flashed"], done["failed"]) == (1, 0)
    (result,) = done["results"]
    has(result, {"target": str, "ok": bool, "stage": str, "message": str, "sent_bytes": int, "log": list})
    assert result["ok"] and result["active"] == "1.0.0"


@pytest.mark.parametrize("command", [["convert"], ["plan"]])
def test_convert_and_plan_take_the_accuracy_drop_in_the_same_syntax(command, tmp_path: Path):
    """`1%` and `0.01` in both; a bad value is refused by both with the same message."""
    bad = runner.invoke(
        app, [*command, "zoo:digits-cnn", "-p", "rpi4", "-o", str(tmp_path / "b"), "--max-accuracy-drop", "one"]
    )
    assert bad.exit_code == 1 and "--max-accuracy-drop 'one' is not a share; write it as 1% or 0.01" in bad.output
    over = runner.invoke(
        app, [*command, "zoo:digits-cnn", "-p", "rpi4", "-o", str(tmp_path / "b"), "--max-accuracy-drop", "150%"]
    )
    assert over.exit_code == 1 and "outside 0..1" in over.output


def test_shares_take_a_percentage_or_a_fraction_everywhere(tmp_path: Path):
    from edge_sdk.apps.cli.common import parse_share

    assert parse_share("1%") == parse_share("0.01") == pytest.approx(0.01)
    assert parse_share("90%", "--min-delegated") == pytest.approx(0.9)
    over = runner.invoke(
        app, ["convert", "zoo:digits-cnn", "-b", "executorch", "-o", str(tmp_path / "b"), "--min-delegated", "120%"]
    )
    assert over.exit_code == 1 and "--min-delegated '120%' is outside 0..1" in over.output


def test_json_has_no_nan(capsys):
    """A model's outputs may hold NaN or infinity; JSON has no such numbers, so they are null."""
    from edge_sdk.apps.cli.common import print_json

    print_json({"values": [1.5, float("nan"), float("-inf")], "mean": float("nan")})
    assert json.loads(capsys.readouterr().out) == {"values": [1.5, None, None], "mean": None}
