"""Hugging Face text encoders built in code (random weights, a real WordPiece tokenizer) -> ONNX and ExecuTorch,
compared with transformers itself at sequence lengths other than the one the export was traced with."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from converters.hf_encoder import load_hf_encoder, tokenize
from converters.resolve import SourceType, default_backend, source_type
from converters.text_zoo import tiny_text_encoder
from edge_sdk.errors import ModelSourceError
from edge_sdk.types import Backend, Task

TEXTS = ["Edge devices run small models all day.", "Hello!", "What is the time now in the city of light?"]


def _transformers_mean(directory, batch):
    """The reference computed apart from the SDK: transformers' last hidden state, mean over real tokens."""
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(directory)).eval()
    with torch.no_grad():
        hidden = model(
            input_ids=torch.from_numpy(batch["input_ids"]), attention_mask=torch.from_numpy(batch["attention_mask"])
        ).last_hidden_state.numpy()
    mask = batch["attention_mask"][..., None].astype(np.float32)
    return (hidden * mask).sum(1) / mask.sum(1)


def _cosines(a, b):
    return np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["onnx-none", "executorch-none"])
def test_embeddings_match_transformers_at_two_sequence_lengths(bert_bundle, bert_dir, variant):
    import edge_sdk

    tokenizer = bert_bundle.path_of(bert_bundle.manifest.preprocessing.tokenizer)
    with edge_sdk.load(bert_bundle, variant) as session:
        for length in (7, 29):  # the export was traced at 16 tokens: both sides of it
            batch = tokenize(tokenizer, TEXTS, length)
            got = session.run(batch)["sentence_embedding"]
            assert got.shape == (len(TEXTS), 64)
            assert _cosines(got, _transformers_mean(bert_dir, batch)).min() >= 0.9999


@pytest.mark.slow
def test_the_bundle_says_what_the_model_is_and_carries_its_tokenizer(bert_bundle, bert_dir):
    m = bert_bundle.manifest
    assert m.schema_version == 2 and m.task is Task.EMBEDDING
    assert m.preprocessing.kind == "text" and m.preprocessing.pooling == "mean" and m.preprocessing.max_length == 64
    carried = bert_bundle.path_of(m.preprocessing.tokenizer)
    assert carried.read_bytes() == (bert_dir / "tokenizer.json").read_bytes()
    for v in m.variants:
        assert [(s.name, s.shape, s.sample_axis) for s in v.inputs] == [
            ("input_ids", ("batch", "sequence"), 0),
            ("attention_mask", ("batch", "sequence"), 0),
        ]
        assert v.accuracy.passed  # judged as embeddings: no argmax over 64 dimensions
        assert [m.name for m in v.accuracy.metrics] == ["cosine_mean", "cosine_min", "neighbour_agreement"]


@pytest.mark.parametrize("arch", ["distilbert", "roberta"])
def test_other_encoder_families_load_and_pool_as_transformers_does(tmp_path, arch):
    directory = tiny_text_encoder(tmp_path / arch, arch=arch)
    source = load_hf_encoder(directory)
    assert source.task is Task.EMBEDDING and source.max_length == 64
    assert [s.shape for s in source.input_specs()] == [("batch", "sequence")] * 2
    for length in (7, 29):
        batch = tokenize(directory / "tokenizer.json", TEXTS, length)
        got = source.reference(batch)["sentence_embedding"]
        assert _cosines(got, _transformers_mean(directory, batch)).min() >= 0.9999


def test_sentence_transformers_pooling_is_followed(tmp_path):
    import torch
    from transformers import AutoModel

    directory = tiny_text_encoder(tmp_path / "st", pooling="cls", normalize=True)
    source = load_hf_encoder(directory)
    assert (source.task, source.pooling, source.normalize) == (Task.EMBEDDING, "cls", True)
    batch = tokenize(directory / "tokenizer.json", TEXTS, 12)
    got = source.reference(batch)["sentence_embedding"]
    with torch.no_grad():
        hidden = AutoModel.from_pretrained(str(directory))(**{k: torch.from_numpy(v) for k, v in batch.items()})
    cls = hidden.last_hidden_state[:, 0].numpy()
    np.testing.assert_allclose(got, cls / np.linalg.norm(cls, axis=1, keepdims=True), atol=1e-5)


def test_a_classifier_config_gives_the_classification_task_and_its_labels(tmp_path):
    directory = tiny_text_encoder(tmp_path / "clf", labels=("negative", "neutral", "positive"))
    source = load_hf_encoder(directory)
    assert source.task is Task.CLASSIFICATION and source.labels == ("negative", "neutral", "positive")
    assert source.reference(tokenize(directory / "tokenizer.json", TEXTS, 10))["logits"].shape == (3, 3)


def test_the_resolver_decides_what_an_argument_is(tmp_path, bert_dir):
    llama = tmp_path / "llama"
    llama.mkdir()
    (llama / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    cases = {
        str(bert_dir): (SourceType.HF_ENCODER, Backend.ONNX),
        str(llama): (SourceType.HF_CAUSAL_LM, Backend.GGUF),
        "m.onnx": (SourceType.ONNX, Backend.ONNX),
        "m.gguf": (SourceType.GGUF, Backend.GGUF),
        "m.tflite": (SourceType.TFLITE, Backend.TFLITE),
        "examples/convert_torch_model.py:build": (SourceType.FACTORY, Backend.ONNX),
        "zoo:digits-cnn": (SourceType.ZOO_TENSOR, Backend.ONNX),
        "zoo:smollm2": (SourceType.ZOO_LANGUAGE, Backend.GGUF),
    }
    assert {k: (source_type(k), default_backend(k)) for k in cases} == cases


def _bad(tmp_path, name, files):
    d = tmp_path / name
    d.mkdir()
    for rel, text in files.items():
        (d / rel).write_text(text)
    return d


@pytest.mark.parametrize(
    ("files", "needle"),
    [
        ({"weights.bin": "x"}, "is not a model: it has no config.json"),
        ({"config.json": json.dumps({"model_type": "no-such-arch"})}, "does not know the architecture 'no-such-arch'"),
    ],
    ids=["not-a-model", "unknown-architecture"],
)
def test_bad_directories_get_one_line_errors(tmp_path, files, needle):
    d = _bad(tmp_path, "m", files)
    with pytest.raises(ModelSourceError, match=needle):
        load_hf_encoder(d) if "config.json" in files else source_type(str(d))
    done = subprocess.run(
        [sys.executable, "-m", "edge_sdk.cli", "convert", str(d), "-o", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr + done.stdout
    assert needle in " ".join((done.stderr + done.stdout).split())


def test_a_missing_tokenizer_is_named(tmp_path, bert_dir):
    import shutil

    d = shutil.copytree(bert_dir, tmp_path / "no-tok")
    (d / "tokenizer.json").unlink()
    with pytest.raises(ModelSourceError, match="has no tokenizer.json"):
        load_hf_encoder(d)
