"""GGUF quantization weighted by an importance matrix from calibration text (llama-imatrix's quantity, computed
through llama.cpp's eval callback), on a tiny LLaMA whose activations have planted outlier columns."""

from __future__ import annotations

import argparse
import collections
import inspect
import logging
import shutil
from pathlib import Path

import gguf
import numpy as np
import pytest
from typer.testing import CliRunner

import edge_sdk
from converters.gguf.evaluate import EVAL_MODULES
from edge_sdk.apps.cli.main import app
from edge_sdk.errors import ConfigError

pytestmark = pytest.mark.slow  # two conversions of a 25M-parameter model (~1 min on 2 cores)

OUTLIER_SCALE = 30.0  # the norm gain of the planted columns; their weights are divided by it: same function
CALIBRATION_MODULES = (argparse, collections, logging, inspect, shutil)  # held out: not the evaluation text


def build_outlier_llama(dest: Path) -> None:
    """A 2-layer LLaMA (hidden 256, so K-quants apply) in which 8 of the hidden channels carry activations 30x
    the others into every weight, with those columns' weights 30x smaller: the float model is the same function,
    but a quantizer that weighs every column alike loses those small weights, and their error is multiplied by
    the large activations. That is the case an importance matrix exists for (LLMs have such outlier features)."""
    import torch
    from llm_families import smollm2_tokenizer_dir
    from tokenizers import Tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM

    shutil.copytree(smollm2_tokenizer_dir(), dest)
    vocab = Tokenizer.from_file(str(dest / "tokenizer.json")).get_vocab_size()
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab, hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=False, bos_token_id=1,
        eos_token_id=2,
    )  # fmt: skip
    model = LlamaForCausalLM(config).eval()
    columns = torch.randperm(256, generator=torch.Generator().manual_seed(1))[:8]
    with torch.no_grad():
        pairs = [(model.model.norm, (model.lm_head,))]
        for layer in model.model.layers:
            attn, mlp = layer.self_attn, layer.mlp
            pairs += [(layer.input_layernorm, (attn.q_proj, attn.k_proj, attn.v_proj)),
                      (layer.post_attention_layernorm, (mlp.gate_proj, mlp.up_proj))]  # fmt: skip
        for norm, linears in pairs:
            norm.weight[columns] *= OUTLIER_SCALE
            for linear in linears:
                linear.weight[:, columns] /= OUTLIER_SCALE
    model.save_pretrained(dest)


@pytest.fixture(scope="module")
def outlier_llama(tmp_path_factory):
    path = tmp_path_factory.mktemp("imatrix") / "outlier-llama"
    build_outlier_llama(path)
    return path


@pytest.fixture(scope="module")
def calibration_file(tmp_path_factory) -> Path:
    assert not {m.__name__ for m in CALIBRATION_MODULES} & set(EVAL_MODULES)
    path = tmp_path_factory.mktemp("calibration") / "calibration.txt"
    path.write_text("\n\n".join(inspect.getdoc(m) or "" for m in CALIBRATION_MODULES), encoding="utf-8")
    return path


def tensors_of(bundle, variant) -> dict[str, tuple[str, bytes]]:
    reader = gguf.GGUFReader(bundle.root / variant.files[0].path)
    return {t.name: (t.tensor_type.name.lower(), bytes(np.asarray(t.data).tobytes())) for t in reader.tensors}


def kl(variant) -> float:
    metric = variant.accuracy.metric("mean_kl")
    assert metric is not None
    return float(metric.value)


def test_importance_matrix_lowers_kl_on_held_out_text(outlier_llama, calibration_file, tmp_path):
    plain = edge_sdk.convert_llm(outlier_llama, quantize="q4_k_m", output=tmp_path / "plain", allow_failed=True)
    args = ["convert", str(outlier_llama), "-b", "gguf", "-q", "q4_k_m,q8_0", "--calibration", str(calibration_file)]
    result = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "weighted"), "--allow-failed"])
    assert result.exit_code == 0, result.output
    weighted = edge_sdk.open_bundle(tmp_path / "weighted")
    (without,), (with_imatrix, q8_0) = plain.variants, weighted.variants
    # Both judged by llama.cpp against the model at float32 on the stdlib docstrings the calibration excludes.
    assert kl(with_imatrix) < kl(without), (kl(with_imatrix), kl(without))
    options = with_imatrix.recipe.options
    tokens = int(options["imatrix_tokens"])
    assert tokens >= 256 and f"{tokens} calibration tokens" in options["imatrix"]
    assert "imatrix" not in without.recipe.options

    # llama.cpp's q4_k_m mix is kept: every tensor has the type llama.cpp chose, q6_k ones included.
    before, after = tensors_of(plain, without), tensors_of(weighted, with_imatrix)
    assert {n: t for n, (t, _) in before.items()} == {n: t for n, (t, _) in after.items()}
    assert {"q4_k", "q6_k"} <= {t for t, _ in after.values()}
    changed = {n for n in before if before[n][1] != after[n][1]}
    quantized_matmuls = {n for n, (t, _) in after.items() if t not in ("f32", "f16") and n != "token_embd.weight"}
    assert changed == quantized_matmuls  # the looked-up embedding and the float norms are untouched
    assert f"{len(changed)} weight(s) quantized with it" in options["imatrix"]
    # q8_0 rounds to nearest whatever the weights: the recipe says the matrix was not used.
    assert q8_0.recipe.options["imatrix"].startswith("not used") and q8_0.accuracy is not None


def test_calibration_that_cannot_apply_is_refused(outlier_llama, tmp_path):
    with pytest.raises(ConfigError, match="needs at least 16"):
        edge_sdk.convert_llm(outlier_llama, quantize="q4_0", output=tmp_path / "a", calibration_text="too short")
    with pytest.raises(ConfigError, match="calibrates on text"):
        edge_sdk.convert(outlier_llama, backend="gguf", quantize="q4_0", calibration={"x": np.zeros(3)})
    with pytest.raises(ConfigError, match="--calibration need a quantization"):
        edge_sdk.convert_llm(outlier_llama, quantize="as-is", calibration_text="some text")
