"""Accuracy-aware int8 on ExecuTorch: the PT2E quantizer leaves the most sensitive modules in float until the
variant meets the bound (converters.mixed_precision over converters.executorch_quant).

A tiny model with a planted outlier channel, so that every trial (a full export) takes a second or two: the
LayerNorm before the head scales one channel by OUTLIER and the head divides its weights by the same factor (the
float function is unchanged), so the head's per-tensor int8 input spends its range on that channel and rounds the
signal channel to zero, by arithmetic, on any CPU. Kept float, the head reads it exactly.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import edge_sdk
from edge_sdk.errors import AccuracyGateError

pytestmark = pytest.mark.slow

FEATURES, HIDDEN, OUTLIER, OUTLIER_CHANNEL, SIGNAL = 16, 32, 1000.0, 5, 3.0
BOUND = 0.05


class OutlierMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.encode = nn.Linear(FEATURES, HIDDEN)
        self.norm = nn.LayerNorm(HIDDEN)
        self.head = nn.Linear(HIDDEN, 2)
        with torch.no_grad():
            self.encode.weight.normal_(0.0, 0.3)
            self.encode.weight[0].zero_()
            self.encode.weight[0, 0] = SIGNAL  # channel 0 carries the feature the label is the sign of
            self.head.weight.normal_(0.0, 0.01)
            self.head.weight[1, 0] += 1.0
            self.head.weight[0, 0] -= 1.0
            self.head.bias.zero_()
            self.norm.weight[OUTLIER_CHANNEL] *= OUTLIER
            self.norm.bias[OUTLIER_CHANNEL] += OUTLIER
            self.head.weight[:, OUTLIER_CHANNEL] /= OUTLIER

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.encode(x)))

    def example_inputs(self) -> dict[str, np.ndarray]:
        return {"input": features(128, seed=1)[0]}

    def eval_data(self) -> tuple[dict[str, np.ndarray], np.ndarray]:
        x, y = features(512, seed=2)
        return {"input": x}, y


def features(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    x = np.random.default_rng(seed).standard_normal((count, FEATURES)).astype(np.float32)
    x[:, 0] += np.sign(x[:, 0]) * 0.5  # no sample on the decision boundary: the label is decided by the data
    return x, (x[:, 0] > 0).astype(np.int64)


def test_the_float_model_decides_its_task():
    model = OutlierMLP().eval()
    inputs, labels = model.eval_data()
    with torch.no_grad():
        decisions = model(torch.from_numpy(inputs["input"])).argmax(1).numpy()
    assert (decisions == labels).mean() > 0.99


def test_accuracy_aware_int8_on_executorch_keeps_the_head_float(tmp_path):
    model = OutlierMLP().eval()
    with pytest.raises(AccuracyGateError):  # every module int8: the head's input rounds the signal away
        edge_sdk.convert(
            model, backend="executorch", quantize="int8-static", output=tmp_path / "all", max_accuracy_drop=None
        )
    bundle = edge_sdk.convert(
        model, backend="executorch", quantize="int8-static", output=tmp_path / "mixed", max_accuracy_drop=BOUND
    )
    variant = bundle.variant("executorch-int8-static")
    options = variant.recipe.options
    assert variant.accuracy.passed and options["float_layers"] == "head"
    assert options["sensitivity"].startswith("head=")  # measured the most sensitive
    accuracy = variant.accuracy.metric("accuracy")
    assert accuracy is not None and accuracy.value >= accuracy.reference - BOUND
    assert "accuracy=" in options["all_layers_int8"]
    with edge_sdk.load(bundle, variant.id) as session:  # the bundle runs as measured
        inputs, labels = model.eval_data()
        decisions = session.run({"input": inputs["input"][:64]})["output"].argmax(1)
    assert (decisions == labels[:64]).mean() >= 1 - BOUND - 1 / 64
