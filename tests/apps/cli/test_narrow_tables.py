"""At COLUMNS=80 every table still shows every id whole: the id is what the user types next (`run --variant ID`).

Long ids (an LLM's `gguf-q4_k_m-ctx4096`, a pruned int8 candidate) beside long columns (fit on several profiles,
a recipe with pruning notes) are the case that used to cut them. Each table must also fit in 80 columns.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

from edge_sdk.apps.cli.main import app
from edge_sdk.bundle import AccuracyReport, Bundle, BundleWriter, FitReport, Metric, Recipe, RuntimeRequirement
from edge_sdk.bundle.manifest import SourceInfo
from edge_sdk.types import Backend, DType, QuantScheme, Task, TensorSpec

NARROW = {"COLUMNS": "80", "TERM": "dumb", "NO_COLOR": "1"}
LONG_IDS = ("executorch-int8-static-pruned50-xnnpack", "onnx-int8-dynamic-per-channel-ctx4096", "onnx-fp32")
PROFILES = ("rpi4", "rpi5", "jetson-orin-nano", "galaxy-s24")


@pytest.fixture(autouse=True)
def terminal_width_from_the_environment(monkeypatch):
    """tests/conftest.py pins COLUMNS=200 before the consoles exist; here they follow COLUMNS as in a terminal."""
    from edge_sdk.apps.cli import common, profiles

    for console in (common.console, profiles.console):
        monkeypatch.setattr(console, "_width", None)


def _cli(*args: str) -> str:
    result = CliRunner().invoke(app, list(args), env=NARROW)
    assert result.exit_code == 0, result.output
    return result.stdout


def _assert_whole(ids: tuple[str, ...] | list[str], text: str) -> None:
    for line in text.splitlines():
        assert len(line) <= 80, f"wider than 80 columns: {line!r}"
    for variant_id in ids:
        assert re.search(rf"(?<![\w.-]){re.escape(variant_id)}(?![\w.-])", text), f"{variant_id!r} is cut:\n{text}"


@pytest.fixture(scope="module")
def long_id_bundle(tmp_path_factory) -> Bundle:
    """A bundle (synthetic bytes: inspect never runs it) whose ids and columns are as long as real ones get."""
    source = SourceInfo(kind="synthetic", digest=hashlib.sha256(b"long").hexdigest())
    writer = BundleWriter(name="long-ids", version="1.0.0", task=Task.TENSOR, source=source, created_by="tests")
    spec = TensorSpec(name="input", dtype=DType.FLOAT32, shape=("batch", 64))
    files = tmp_path_factory.mktemp("long-files")
    metric = Metric(name="cosine_mean", value=0.9993, reference=1.0, tolerance=0.01, higher_is_better=True, passed=True)
    for i, variant_id in enumerate(LONG_IDS):
        model = files / f"{variant_id}.bin"
        model.write_bytes(np.random.default_rng(i).bytes(2048 * (i + 1)))
        options = {"parameters_before": "38282", "parameters_after": "9802", "delegated_share_flops": "0.97"}
        writer.add_variant(
            variant_id=variant_id,
            backend=Backend.ONNX,
            files={"model.onnx": model},
            inputs=(spec,),
            outputs=(TensorSpec(name="output", dtype=DType.FLOAT32, shape=("batch", 10)),),
            recipe=Recipe(quantization=QuantScheme.INT8_STATIC, precision="int8", pruning_ratio=0.5, options=options),
            runtime=RuntimeRequirement(package="onnxruntime", version="1.20.1", extra="onnx"),
            accuracy=AccuracyReport(reference="fp32", samples=64, metrics=(metric,), passed=True),
            fit={
                p: FitReport(profile=p, fits=True, estimated_peak_bytes=40 << 20, budget_bytes=2 << 30)
                for p in PROFILES
            },
        )
    return writer.write(tmp_path_factory.mktemp("long") / "long-ids")


def test_inspect_shows_every_variant_id_whole_at_80_columns(long_id_bundle):
    _assert_whole(LONG_IDS, _cli("inspect", str(long_id_bundle.root)))


def test_models_shows_every_model_name_whole_at_80_columns(long_id_bundle, tmp_path):
    from edge_sdk.store import BundleStore

    BundleStore(tmp_path).install(long_id_bundle.root, check=lambda bundle: True)
    _assert_whole(["long-ids"], _cli("models", "--store", str(tmp_path)))


def test_fit_shows_every_variant_id_whole_at_80_columns(onnx_bundle):
    ids = [v.id for v in onnx_bundle.variants]
    _assert_whole(ids, _cli("fit", str(onnx_bundle.root), "-p", "rpi4", "--no-measure"))


def test_profiles_list_shows_every_id_whole_at_80_columns():
    from device_profiles.loader import profile_ids

    _assert_whole(list(profile_ids()), _cli("profiles", "list"))


def test_plan_table_shows_every_candidate_id_whole_at_80_columns():
    from converters.plan import Candidate, Plan, PlanRequest
    from edge_sdk.apps.cli.plan_cmd import plan_table

    request = PlanRequest(
        model="zoo:digits-cnn", profile="rpi4", backends=(Backend.ONNX, Backend.EXECUTORCH),
        quantizations=(QuantScheme.NONE, QuantScheme.INT8_STATIC), prune=(0.0, 0.5),
    )  # fmt: skip
    reason = "estimated peak 412.0 MiB is over the budget 256.0 MiB: engine 360.0 MiB + weights 52.0 MiB"
    candidates = (
        Candidate(id=LONG_IDS[0], backend=Backend.EXECUTORCH, quantization=QuantScheme.INT8_STATIC, prune=0.5,
                  status="does-not-fit", reasons=(reason,)),
        Candidate(id=LONG_IDS[1], backend=Backend.ONNX, quantization=QuantScheme.INT8_DYNAMIC, status="ranked",
                  rank=1, size_bytes=40_000, peak_bytes=90 << 20, latency_ms=0.31, accuracy=0.978, accuracy_drop=0.003),
    )  # fmt: skip
    console = Console(width=80, record=True, file=open(Path("/dev/null"), "w"))  # noqa: SIM115 - closed with the run
    console.print(plan_table(Plan(request=request, candidates=candidates)))
    _assert_whole(LONG_IDS[:2], console.export_text())
