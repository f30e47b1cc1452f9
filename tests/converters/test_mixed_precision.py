"""int8 recipes by model kind, and accuracy-aware mixed precision (converters.onnx_recipe, converters.mixed_precision).

Every ONNX Runtime session here is the SDK's own (exact int32 accumulation on x86), so no verdict depends on the
CPU's int8 kernels; the planted outlier breaks per-tensor int8 by arithmetic, on any CPU.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

import edge_sdk
from edge_sdk.errors import AccuracyGateError, ConfigError

pytestmark = pytest.mark.slow

BOUND = 0.02


@pytest.fixture(scope="module")
def classifier():
    from converters.zoo_text import outlier_classifier

    return outlier_classifier()


@pytest.fixture(scope="module")
def mixed_bundle(classifier, tmp_path_factory):
    return edge_sdk.convert(
        classifier,
        backend="onnx",
        quantize="int8-static",
        output=tmp_path_factory.mktemp("mixed") / "classifier",
        max_accuracy_drop=BOUND,
    )


def test_the_planted_outlier_leaves_the_float_model_unchanged(classifier):
    from converters.zoo_text import build_classifier

    plain = build_classifier()
    tokens = torch.from_numpy(classifier.eval_data()[0]["tokens"][:64])
    with torch.no_grad():
        np.testing.assert_allclose(classifier(tokens).numpy(), plain(tokens).numpy(), rtol=1e-4, atol=1e-4)
    inputs, labels = classifier.eval_data()
    with torch.no_grad():
        accuracy = (classifier(torch.from_numpy(inputs["tokens"])).argmax(1).numpy() == labels).mean()
    assert accuracy > 0.95, "the classifier must decide its task for a drop in accuracy to mean something"


def test_int8_without_a_bound_is_refused(classifier, tmp_path):
    # All layers int8: the classifier's input is quantized per tensor, its range spent on the outlier channel.
    with pytest.raises(AccuracyGateError, match="top1_agreement") as err:
        edge_sdk.convert(classifier, backend="onnx", quantize="int8-static", output=tmp_path / "b")
    assert "--max-accuracy-drop" in str(err.value)


def test_accuracy_aware_int8_meets_the_bound_with_the_float_layers_named(mixed_bundle, classifier):
    variant = mixed_bundle.variant("onnx-int8-static")
    assert variant.accuracy.passed
    for name in ("accuracy", "top1_agreement"):
        metric = variant.accuracy.metric(name)
        assert metric is not None and metric.reference is not None
        assert metric.value >= metric.reference - BOUND
    options = variant.recipe.options
    float_layers = options["float_layers"].split(",")
    # The one layer that reads the outlier channel: the classifier (a Gemm whose weight is classifier.weight).
    assert 1 <= len(float_layers) < 13
    assert any("Gemm" in name for name in float_layers), float_layers
    assert "all_layers_int8" in options and "accuracy_aware" in options
    assert options["model_kind"] == "transformer" and options["calibration_method"] == "percentile"
    # The quantizable layers' weights are at least 3x smaller than in fp32.
    assert int(options["layer_weight_bytes_fp32"]) >= 3 * int(options["layer_weight_bytes"])
    # Checked again here, outside the converter: the variant's decisions against eager torch.
    inputs, _ = classifier.eval_data()
    with torch.no_grad():
        expected = classifier(torch.from_numpy(inputs["tokens"])).numpy().argmax(1)
    with edge_sdk.load(mixed_bundle, "onnx-int8-static") as session:
        got = session.run(inputs)["output"].argmax(1)
    assert (got == expected).mean() >= 1 - BOUND


def test_transformer_recipe_keeps_norms_softmax_gelu_embeddings_and_attention_scores_float(mixed_bundle):
    variant = mixed_bundle.variant("onnx-int8-static")
    model = onnx.load(str(mixed_bundle.path_of(variant.files[0])))
    producer = {out: node for node in model.graph.node for out in node.output}

    def dequantized(name: str) -> bool:
        return name in producer and producer[name].op_type == "DequantizeLinear"

    def quantized_from(name: str) -> str:  # what the int8 tensor feeding a DequantizeLinear was computed by
        source = producer[producer[name].input[0]].input[0] if producer[name].input[0] in producer else ""
        return producer[source].op_type if source in producer else "initializer"

    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") or not any(dequantized(i) for i in node.input):
            continue
        # Only the projections take int8 tensors, plus the bias Add after one (ORT quantizes a MatMul's output).
        assert node.op_type in ("MatMul", "Gemm", "Add"), node.op_type
        if node.op_type == "Add":
            assert {quantized_from(i) for i in node.input if dequantized(i)} == {"MatMul"}, node.name
    score_products = [
        node
        for node in model.graph.node
        if node.op_type == "MatMul"
        and all(i in producer and producer[i].op_type != "DequantizeLinear" for i in node.input)
    ]
    assert len(score_products) >= 4  # q @ k^T and scores @ v in each of the two layers, in float
    assert any(producer[i].op_type == "Softmax" for n in score_products for i in n.input if i in producer)


def test_digits_cnn_int8_static_within_a_tenth_of_a_point(digits, digits_model, tmp_path):
    bundle = edge_sdk.convert(
        digits_model,
        {"input": digits.train_x[:64]},
        backend="onnx",
        quantize="int8-static",
        output=tmp_path / "digits",
        calibration={"input": digits.train_x[:512]},
        eval_data=({"input": digits.test_x}, digits.test_y),
        max_accuracy_drop=0.001,
    )
    variant = bundle.variants[0]
    accuracy = variant.accuracy.metric("accuracy")
    assert variant.accuracy.passed and accuracy is not None and accuracy.reference is not None
    assert accuracy.value >= accuracy.reference - 0.001
    assert variant.recipe.options["model_kind"] == "cnn"
    assert int(variant.recipe.options["layer_weight_bytes_fp32"]) >= 3 * int(
        variant.recipe.options["layer_weight_bytes"]
    )


def test_calibration_method_is_selectable_and_recorded(digits, digits_model, tmp_path):
    bundle = edge_sdk.convert(
        digits_model,
        {"input": digits.train_x[:64]},
        backend="onnx",
        quantize="int8-static",
        output=tmp_path / "digits",
        calibration={"input": digits.train_x[:256]},
        calibration_method="percentile",
        eval_data=({"input": digits.test_x}, digits.test_y),
    )
    assert bundle.variants[0].recipe.options["calibration_method"] == "percentile"


def test_unknown_calibration_method_names_the_valid_ones(digits_model, tmp_path):
    with pytest.raises(ConfigError, match=r"unknown calibration method 'kl'; valid: 'minmax', 'entropy', 'percentile'"):
        edge_sdk.convert(digits_model, backend="onnx", quantize="int8-static", calibration_method="kl", output=tmp_path)
