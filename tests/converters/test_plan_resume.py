"""`plan` keeps what it measured as it goes, resumes from its file, replays a finished plan without converting,
and exports the source once per backend for all its quantizations."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import converters.executorch_export as executorch_export
import converters.onnx_export as onnx_export
from converters.pipeline import ConvertOptions, convert
from converters.progress import Progress
from converters.sources import TorchSource
from edge_sdk.apps.cli.main import app
from edge_sdk.planning import load_plan, make_request, resume_plan, run_plan
from edge_sdk.types import Backend, QuantScheme

pytestmark = pytest.mark.slow  # converts a tiny model a few times (about a second each)

FACTORY = """
import numpy as np
import torch


def make():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4)).eval()
    model.example_inputs = lambda: {"input": np.random.default_rng(0).standard_normal((64, 16)).astype(np.float32)}
    return model
"""
SCHEMES = "none,fp16,int8-dynamic"  # three ONNX candidates from one export


class Interrupt:
    """Stands in for Ctrl-C: raises KeyboardInterrupt when the plan starts measuring its `after`-th candidate."""

    def __init__(self, after: int) -> None:
        self.after, self.seen = after, 0

    def __call__(self, step: Progress) -> None:
        if step.step == "measuring":
            self.seen += 1
            if self.seen == self.after:
                raise KeyboardInterrupt


class Steps(list):
    def __call__(self, step: Progress) -> None:
        self.append(step)

    def exported(self) -> list[str]:
        return [s.variant for s in self if s.step == "export"]


@pytest.fixture
def tiny(tmp_path):
    factory = tmp_path / "tiny.py"
    factory.write_text(FACTORY)
    return f"{factory}:make"


def test_an_interrupted_plan_keeps_what_it_measured_and_resumes_with_the_rest(tiny, tmp_path):
    request = make_request(tiny, "rpi5", backends="onnx", quantize=SCHEMES, prune="0")
    file = tmp_path / "plan.json"
    with pytest.raises(KeyboardInterrupt):
        run_plan(request, workdir=tmp_path / "w1", save_to=file, progress=Interrupt(after=2))
    partial = load_plan(file)  # the plan file as the interrupt left it
    assert [c.id for c in partial.candidates] == ["onnx-none"]
    assert partial.pending == ("onnx-fp16", "onnx-int8-dynamic") and not partial.complete
    first = partial.candidates[0]

    steps = Steps()
    resumed = resume_plan(file, workdir=tmp_path / "w2", progress=steps)
    assert steps.exported() == ["onnx-fp16", "onnx-int8-dynamic"]  # only what was not measured
    assert resumed.complete and {c.id for c in resumed.candidates} == {"onnx-none", "onnx-fp16", "onnx-int8-dynamic"}
    assert next(c for c in resumed.candidates if c.id == "onnx-none") == first.model_copy(
        update={"rank": next(c.rank for c in resumed.candidates if c.id == "onnx-none")}
    )  # replayed as recorded: same latency, size and accuracy
    assert load_plan(file) == resumed  # the file is the finished plan now


def test_from_replays_a_finished_plan_without_converting(tiny, tmp_path):
    first = tmp_path / "plan.json"
    result = CliRunner().invoke(
        app, ["plan", tiny, "-p", "rpi5", "-b", "onnx", "-q", SCHEMES, "--prune", "0", "--objective", "latency",
              "--output", str(first)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    steps = Steps()
    again = resume_plan(first, progress=steps, save_to=tmp_path / "again.json")
    assert steps == []  # nothing resolved, exported or measured
    before = load_plan(first)
    # the same ranking even by latency: the recorded timings are replayed, not measured again
    assert [(c.id, c.rank, c.latency_ms) for c in again.candidates] == [
        (c.id, c.rank, c.latency_ms) for c in before.candidates
    ]
    replay = CliRunner().invoke(app, ["plan", "--from", str(first), "--output", str(tmp_path / "cli.json")])
    assert replay.exit_code == 0, replay.output
    assert json.loads((tmp_path / "cli.json").read_text())["candidates"] == json.loads(first.read_text())["candidates"]


def test_each_backend_exports_the_source_once_for_all_its_quantizations(tmp_path, monkeypatch):
    calls = {"onnx": 0, "executorch": 0}
    real_onnx, real_et = onnx_export._export_torch, executorch_export._export

    def counted_onnx(*args, **kwargs):
        calls["onnx"] += 1
        return real_onnx(*args, **kwargs)

    def counted_et(*args, **kwargs):
        calls["executorch"] += 1
        return real_et(*args, **kwargs)

    monkeypatch.setattr(onnx_export, "_export_torch", counted_onnx)
    monkeypatch.setattr(executorch_export, "_export", counted_et)
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4)).eval()
    inputs = {"input": np.random.default_rng(0).standard_normal((64, 16)).astype(np.float32)}
    pairs = [(Backend.ONNX, q) for q in (QuantScheme.NONE, QuantScheme.FP16, QuantScheme.INT8_DYNAMIC)]
    pairs += [(Backend.EXECUTORCH, q) for q in (QuantScheme.NONE, QuantScheme.INT8_DYNAMIC)]
    bundle = convert(TorchSource(module, inputs), [], [], tmp_path / "b", ConvertOptions(name="tiny"), pairs=pairs)
    assert len(bundle.variants) == 5 and all(v.accuracy.passed for v in bundle.variants)
    assert calls == {"onnx": 1, "executorch": 1}
