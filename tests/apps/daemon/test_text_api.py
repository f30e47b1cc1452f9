"""Text in on the device: /v1/embeddings (the official openai client) and /v1/classify/{model} for bundles that
carry a tokenizer, tokenized with the `tokenizers` package; /v1/infer still takes the raw tensors."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from edge_sdk.apps.daemon.pool import DirectorySource

TEXTS = ["The board runs the model all day.", "Hello!", "Where is the nearest train to the airport?"]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def text_daemon(serve_bundles, bert_bundle, classifier_bundle, onnx_bundle):
    with serve_bundles(DirectorySource([bert_bundle.root, classifier_bundle.root, onnx_bundle.root])) as url:
        yield url


def _cosines(a, b):
    return np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _reference(bundle, texts, variant):
    """What the model gives for these texts when the test tokenizes them itself, one text at a time (no padding)."""
    from converters.hf_encoder import tokenize
    from edge_sdk.bundle import Bundle
    from runtimes import get_runtime

    opened = Bundle.open(bundle.root)
    tokenizer = opened.path_of(opened.manifest.preprocessing.tokenizer)
    chosen = opened.variant(variant)
    with get_runtime(chosen.backend).load(chosen, opened.root) as raw:
        rows = []
        for text in texts:
            length = len(tokenize(tokenizer, [text], 64)["attention_mask"][0].nonzero()[0])
            rows.append(raw.run(tokenize(tokenizer, [text], length))[opened.variant(variant).outputs[0].name][0])
    return np.stack(rows)


def test_embeddings_through_the_openai_client(text_daemon, bert_bundle):
    from openai import OpenAI

    client = OpenAI(base_url=f"{text_daemon}/v1", api_key="unused")
    response = client.embeddings.create(model="tiny-bert", input=TEXTS)
    got = np.array([d.embedding for d in sorted(response.data, key=lambda d: d.index)], np.float32)
    assert got.shape == (3, 64)
    # Batched with padding on the device vs one unpadded text at a time here: padding must not move the result.
    assert _cosines(got, _reference(bert_bundle, TEXTS, "onnx-none")).min() >= 0.9999
    single = client.embeddings.create(model="tiny-bert", input="Hello!")
    assert _cosines(np.array([single.data[0].embedding]), got[1:2])[0] >= 0.9999


def test_the_executorch_variant_embeds_text_too(bert_bundle):
    import edge_sdk

    with edge_sdk.load(bert_bundle, "executorch-none") as session:
        got = session.embed(TEXTS)
    assert _cosines(got, _reference(bert_bundle, TEXTS, "onnx-none")).min() >= 0.9999


def test_a_classifier_answers_text_with_its_labels(text_daemon, classifier_bundle):
    r = httpx.post(f"{text_daemon}/v1/classify/tiny-sentiment", json={"input": TEXTS}, timeout=60)
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    logits = _reference(classifier_bundle, TEXTS, None)
    assert [d["label"] for d in data] == [("negative", "neutral", "positive")[i] for i in logits.argmax(1)]
    for d, row in zip(data, logits, strict=True):
        probs = np.exp(row - row.max()) / np.exp(row - row.max()).sum()
        assert set(d["scores"]) == {"negative", "neutral", "positive"}
        np.testing.assert_allclose([d["scores"][k] for k in ("negative", "neutral", "positive")], probs, atol=1e-5)
        assert d["score"] == max(d["scores"].values())
    assert r.json()["usage"]["prompt_tokens"] > len(TEXTS)


def test_raw_tensors_still_go_to_infer(text_daemon, bert_bundle):
    from converters.hf_encoder import tokenize

    batch = tokenize(bert_bundle.path_of(bert_bundle.manifest.preprocessing.tokenizer), TEXTS[:1], 9)
    inputs = {k: {"dtype": "int64", "shape": list(v.shape), "data": v.reshape(-1).tolist()} for k, v in batch.items()}
    r = httpx.post(f"{text_daemon}/v1/infer/tiny-bert", json={"inputs": inputs}, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["outputs"]["sentence_embedding"]["shape"] == [1, 64]


@pytest.mark.parametrize(
    ("path", "body", "needle"),
    [
        ("/v1/classify/digits-cnn", {"input": "hi"}, "takes tensors, not text"),
        ("/v1/classify/tiny-bert", {"input": "hi"}, "not a text classifier"),
        ("/v1/embeddings", {"model": "tiny-sentiment", "input": "hi"}, "not an embedding model"),
        ("/v1/classify/tiny-sentiment", {"input": []}, "input must hold 1 to 256 texts"),
    ],
    ids=["tensor-model", "embedder", "classifier-embeds", "empty"],
)
def test_wrong_text_requests_get_a_400_naming_why(text_daemon, path, body, needle):
    r = httpx.post(f"{text_daemon}{path}", json=body, timeout=60)
    assert r.status_code == 400, r.text
    assert needle in r.json()["error"]["message"]


def test_run_shows_the_class_names_and_the_values(classifier_bundle, tmp_path):
    import subprocess
    import sys

    from converters.hf_encoder import tokenize

    np.savez(
        tmp_path / "in.npz",
        **tokenize(classifier_bundle.path_of(classifier_bundle.manifest.preprocessing.tokenizer), TEXTS, 12),
    )
    done = subprocess.run(
        [sys.executable, "-m", "edge_sdk.cli", "run", str(classifier_bundle.root), "-i", str(tmp_path / "in.npz")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    logits = _reference(classifier_bundle, TEXTS, None)
    names = [("negative", "neutral", "positive")[i] for i in logits.argmax(1)]
    assert f"logits: float32[3x3] class {names}" in done.stdout and "values [" in done.stdout


def test_the_device_side_embeds_text_without_torch(bert_bundle):
    import subprocess
    import sys

    code = (
        "import sys, edge_sdk\n"
        f"s = edge_sdk.load({str(bert_bundle.root)!r}, 'onnx-none')\n"
        "v = s.embed(['hello there', 'a small board'])\n"
        "assert v.shape == (2, 64), v.shape\n"
        "heavy = [m for m in ('torch', 'transformers', 'executorch') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
