"""Structured pruning removes channels for real, distillation recovers the accuracy; sparsity is told as it is."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import edge_sdk
from converters.prune import TrainData, parameter_count, prune_structured, recover
from converters.zoo import accuracy
from edge_sdk.apps.cli.main import app
from edge_sdk.errors import ConfigError

BOUND = 0.01  # the "--max-accuracy-drop 1%"


pytestmark = pytest.mark.slow  # each conversion prunes and fine-tunes (seconds alone, more on a busy machine)


@pytest.fixture(scope="module")
def pruned_bundle(tmp_path_factory, digits, digits_model):
    return edge_sdk.convert(
        digits_model,
        {"input": digits.train_x[:64]},
        quantize="none,int8-static",
        prune=0.5,
        max_accuracy_drop=BOUND,
        output=tmp_path_factory.mktemp("pruned") / "b",
        name="digits-pruned",
        calibration={"input": digits.train_x[:512]},
        eval_data=({"input": digits.test_x}, digits.test_y),
    )


def test_pruning_half_the_channels_shrinks_parameters_and_the_file(pruned_bundle, onnx_bundle):
    pruned = pruned_bundle.variant("onnx-none-pruned50")
    assert pruned.recipe.pruning_ratio == 0.5
    before, after = int(pruned.recipe.options["parameters_before"]), int(pruned.recipe.options["parameters_after"])
    assert after < 0.5 * before  # both sides of each inner layer lose half: about a quarter remains
    assert pruned.size_bytes < 0.5 * onnx_bundle.variant("onnx-none").size_bytes
    assert (
        pruned_bundle.variant("onnx-int8-static-pruned50").size_bytes
        < onnx_bundle.variant("onnx-int8-static").size_bytes
    )


def test_recovery_brings_accuracy_back_within_the_bound(pruned_bundle):
    for variant in pruned_bundle.variants:
        acc = variant.accuracy.metric("accuracy")
        assert variant.accuracy.passed, variant.id
        assert acc.value >= acc.reference - BOUND, (variant.id, acc.value, acc.reference)
        assert "distillation" in variant.recipe.options["recovery"]


def test_without_recovery_the_pruned_model_is_worse(digits, digits_model):
    x = torch.from_numpy(digits.test_x)
    raw = prune_structured(digits_model, {"input": digits.train_x[:4]}, 0.5)
    assert parameter_count(raw) < parameter_count(digits_model) / 2
    data = TrainData({"input": digits.train_x[:512]})  # distillation alone, no labels
    recovered = recover(
        prune_structured(digits_model, {"input": digits.train_x[:4]}, 0.5), digits_model, data, epochs=8
    )
    with torch.no_grad():
        raw_acc = accuracy(raw(x).numpy(), digits.test_y)
        recovered_acc = accuracy(recovered(x).numpy(), digits.test_y)
    assert recovered_acc > raw_acc + 0.05


def test_the_pruned_bundle_reruns_its_golden_set(pruned_bundle):
    report = edge_sdk.check_golden(pruned_bundle, "onnx-none-pruned50")
    assert report.passed


def test_unstructured_sparsity_is_reported_as_not_shrinking_the_file(tmp_path, digits, digits_model, onnx_bundle):
    bundle = edge_sdk.convert(
        digits_model,
        {"input": digits.train_x[:64]},
        sparsity=0.3,
        allow_failed=True,
        output=tmp_path / "sparse",
        eval_data=({"input": digits.test_x}, digits.test_y),
    )
    variant = bundle.variant("onnx-none-sparse30")
    dense = onnx_bundle.variant("onnx-none").size_bytes
    assert abs(variant.size_bytes - dense) < 0.02 * dense  # zeros are stored like any other float
    assert float(variant.recipe.options["sparsity"]) >= 0.3
    assert "no smaller" in variant.recipe.options["sparsity_effect"]


def test_pruning_refuses_what_it_cannot_do(tmp_path, onnx_bundle, digits_model, digits):
    onnx_file = onnx_bundle.path_of(onnx_bundle.variant("onnx-none").files[0])
    with pytest.raises(ConfigError, match="pruning needs a torch model"):
        edge_sdk.convert(str(onnx_file), {"input": digits.test_x[:8]}, prune=0.5, output=tmp_path / "x")
    with pytest.raises(ConfigError, match=r"pruning ratio must be between 0 and 0.9"):
        edge_sdk.convert(digits_model, prune=1.5, output=tmp_path / "y")
    only_the_output = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))  # nothing it may remove
    with pytest.raises(ConfigError, match="pruning 50% removed nothing from Sequential"):
        edge_sdk.convert(only_the_output, {"input": digits.test_x[:8]}, prune=0.5, output=tmp_path / "w")
    for option in ({"prune": 0.5}, {"sparsity": 0.5}):  # the LLM pipeline would quietly ignore them
        with pytest.raises(ConfigError, match="pruning and sparsity apply to tensor models"):
            edge_sdk.convert("zoo:smollm2", backend="gguf", quantize="q4_0", output=tmp_path / "z", **option)
    assert not (tmp_path / "z").exists()


def test_cli_convert_prune_shows_the_parameters(tmp_path):
    out = tmp_path / "b"
    result = CliRunner().invoke(
        app,
        ["convert", "zoo:digits-cnn", "--prune", "0.5", "--max-accuracy-drop", "0.01", "-o", str(out)],
        env={"COLUMNS": "250"},
    )
    assert result.exit_code == 0, result.output
    assert "onnx-none-pruned50" in result.output and "pruned 50% (38282 -> 9802 parameters)" in result.output
    bad = CliRunner().invoke(app, ["convert", "zoo:digits-cnn", "--prune", "2", "-o", str(tmp_path / "c")])
    assert bad.exit_code != 0 and "--prune" in bad.output


def test_recovery_is_reproducible(digits, digits_model):
    data = TrainData({"input": digits.train_x[:256]}, digits.train_y[:256])
    a = recover(prune_structured(digits_model, {"input": digits.train_x[:4]}, 0.5), digits_model, data, epochs=2)
    b = recover(prune_structured(digits_model, {"input": digits.train_x[:4]}, 0.5), digits_model, data, epochs=2)
    x = torch.from_numpy(digits.test_x[:32])
    with torch.no_grad():
        np.testing.assert_array_equal(a(x).numpy(), b(x).numpy())


def test_attention_and_mlp_width_shrink_in_a_transformer_block(tmp_path):
    from torch import nn

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Linear(8, 64)
            self.attn = nn.MultiheadAttention(64, 8, batch_first=True)
            self.mlp = nn.Sequential(nn.Linear(64, 256), nn.GELU(), nn.Linear(256, 64))
            self.head = nn.Linear(64, 10)

        def forward(self, x):
            h = self.embed(x)
            h = h + self.attn(h, h, h, need_weights=False)[0]
            return self.head((h + self.mlp(h)).mean(1))

    torch.manual_seed(0)
    model = Block().eval()
    x = np.random.default_rng(0).standard_normal((4, 8, 8)).astype(np.float32)
    pruned = prune_structured(model, {"x": x}, 0.5)
    assert pruned.attn.embed_dim == 32 and pruned.mlp[0].out_features == 128
    assert parameter_count(pruned) < 0.3 * parameter_count(model)
    bundle = edge_sdk.convert(pruned, {"x": x}, output=tmp_path / "b")  # still a model every engine takes
    assert bundle.variants[0].accuracy.passed
