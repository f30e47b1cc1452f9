"""ONNX models whose inputs are not all batches: a GRU with a [layers, batch, H] state and a scalar int64 input.
The SDK reads the sample axes from the symbolic dims (or is told them), never slices what it cannot prove
batched, and the converted model carries its state over a sequence of 20 chunks as the torch model does."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from converters.sources import OnnxFileSource
from converters.verify import chunks
from edge_sdk.errors import ConfigError, ModelSourceError

FEATURES, HIDDEN, LAYERS, BATCH, STEPS = 6, 16, 2, 4, 5


class StatefulGru(nn.Module):
    """A streaming model: a chunk of frames and the state from the last chunk in, outputs and new state out."""

    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(FEATURES, HIDDEN, num_layers=LAYERS, batch_first=True)
        self.head = nn.Linear(HIDDEN, 3)

    def forward(self, x: torch.Tensor, state: torch.Tensor, sr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scaled = x * (sr.to(x.dtype) / 16000.0)  # the sample rate, a scalar side input
        y, new_state = self.gru(scaled, state)
        return self.head(y), new_state


def _export(path, state_symbol="batch"):
    torch.manual_seed(0)
    model = StatefulGru().eval()
    args = (torch.randn(BATCH, STEPS, FEATURES), torch.zeros(LAYERS, BATCH, HIDDEN), torch.tensor(16000))
    torch.onnx.export(
        model, args, str(path), dynamo=False, input_names=["x", "state", "sr"], output_names=["y", "state_out"],
        dynamic_axes={"x": {0: "batch", 1: "time"}, "state": {1: state_symbol}, "y": {0: "batch", 1: "time"},
                      "state_out": {1: state_symbol}},
    )  # fmt: skip
    return model


def _examples(n=8):
    rng = np.random.default_rng(0)
    return {
        "x": rng.standard_normal((n, STEPS, FEATURES)).astype(np.float32),
        "state": rng.standard_normal((LAYERS, n, HIDDEN)).astype(np.float32),
        "sr": np.array(16000, dtype=np.int64),
    }


@pytest.fixture(scope="module")
def gru(tmp_path_factory):
    path = tmp_path_factory.mktemp("gru") / "gru.onnx"
    return path, _export(path)


def test_sample_axes_come_from_the_symbolic_dims(gru):
    source = OnnxFileSource(gru[0], _examples())
    assert {s.name: s.sample_axis for s in source.input_specs()} == {"x": 0, "state": 1, "sr": None}
    assert {s.name: s.sample_axis for s in source.output_specs()} == {"y": 0, "state_out": 1}
    parts = chunks(_examples(300), source.input_specs())  # more than one batch of 256
    assert [p["x"].shape[0] for p in parts] == [256, 44]
    assert [p["state"].shape for p in parts] == [(LAYERS, 256, HIDDEN), (LAYERS, 44, HIDDEN)]
    assert all(p["sr"].shape == () for p in parts)


def test_static_calibration_batches_keep_the_state(gru):
    from converters.onnx_export import _CalibrationReader

    source = OnnxFileSource(gru[0], _examples())
    reader = _CalibrationReader(_examples(40), source.input_specs())
    batches = list(iter(reader.get_next, None))
    assert [b["state"].shape[1] for b in batches] == [32, 8] and all(b["sr"].ndim == 0 for b in batches)


def test_converts_and_carries_its_state_over_20_chunks(gru, tmp_path):
    import edge_sdk

    path, model = gru
    bundle = edge_sdk.convert(str(path), _examples(), quantize="none", output=tmp_path / "b")
    variant = bundle.variant()
    assert variant.accuracy.passed
    assert {s.name: s.sample_axis for s in variant.inputs} == {"x": 0, "state": 1, "sr": None}
    frames = np.random.default_rng(1).standard_normal((20, 3, STEPS, FEATURES)).astype(np.float32)
    sr = np.array(8000, dtype=np.int64)
    state = np.zeros((LAYERS, 3, HIDDEN), np.float32)
    ref_state = torch.zeros(LAYERS, 3, HIDDEN)
    with edge_sdk.load(bundle) as session, torch.no_grad():
        for chunk in frames:
            out = session.run({"x": chunk, "state": state, "sr": sr})
            ref_y, ref_state = model(torch.from_numpy(chunk), ref_state, torch.tensor(8000))
            state = out["state_out"]
            np.testing.assert_allclose(out["y"], ref_y.numpy(), rtol=1e-4, atol=1e-5)
    # After 20 chunks the state still matches: it was carried, not reset or sliced.
    np.testing.assert_allclose(state, ref_state.numpy(), rtol=1e-4, atol=1e-5)
    assert np.abs(state).max() > 0.05


def test_axes_the_model_does_not_name_are_declared(tmp_path):
    import edge_sdk

    path = tmp_path / "gru-own-symbol.onnx"
    _export(path, state_symbol="n")  # the state's batch has a name of its own: not provably x's batch
    assert {s.name: s.sample_axis for s in OnnxFileSource(path, _examples()).input_specs()}["state"] is None
    bundle = edge_sdk.convert(
        str(path), _examples(), batch_axes={"state": 1}, static_inputs=["sr"], output=tmp_path / "b"
    )
    assert {s.name: s.sample_axis for s in bundle.variant().inputs} == {"x": 0, "state": 1, "sr": None}


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"batch_axes": {"state": 3}}, "input 'state' (state: float32[2xbatchx16]) has no axis 3"),
        ({"batch_axes": {"hidden": 1}}, "the model has no input 'hidden'; its inputs: x, state, sr"),
        ({"batch_axes": {"sr": 0}}, "input 'sr' is a scalar: it has no batch axis"),
    ],
    ids=["axis", "name", "scalar-axis"],
)
def test_a_declared_axis_that_does_not_exist_is_refused(gru, kwargs, needle):
    with pytest.raises(ConfigError, match=needle.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        OnnxFileSource(gru[0], _examples(), **kwargs)


def test_a_scalar_given_with_a_batch_is_a_one_line_error(gru, tmp_path):
    examples = {**_examples(), "sr": np.full(8, 16000, dtype=np.int64)}
    np.savez(tmp_path / "ex.npz", **examples)
    done = subprocess.run(
        [sys.executable, "-m", "edge_sdk.cli", "convert", str(gru[0]), "--example", str(tmp_path / "ex.npz"),
         "-o", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    text = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == 1 and "Traceback" not in text
    assert "input 'sr' is a scalar, but the example gives shape [8]" in text


def test_the_executorch_refusal_for_an_onnx_file_is_clean(gru, tmp_path):
    import edge_sdk

    with pytest.raises(ModelSourceError, match="cannot read a 'onnx' source"):
        edge_sdk.convert(str(gru[0]), _examples(), backend="executorch", output=tmp_path / "b")
