"""GGUF conversion: tiny LLaMA models built here round-trip exactly; SmolLM2 re-quantizes; bad inputs are refused."""

from __future__ import annotations

import inspect
import json
import shutil
import struct
import textwrap
from pathlib import Path

import numpy as np
import pytest

from edge_sdk.errors import AccuracyGateError, ConfigError, ModelSourceError

# Not "and   0042": llama.cpp 0c1e57098's 'smollm' pre-tokenizer splits a run of spaces before digits differently
# from SmolLM2's tokenizer.json (its own limit, the same for a GGUF from llama.cpp's converter).
VARIED_TEXT = "Hello  wörld 12345 —  \t tabs\n\n\nnew   lines ünïcödé 日本語 😀 x=3.14159 and 0042!"
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_llama(dest: Path, *, seed: int = 0):
    """A 2-layer LLaMA with SmolLM2's real byte-level BPE tokenizer (a vocabulary llama.cpp identifies by hash)."""
    import torch
    from llm_families import smollm2_tokenizer_dir
    from tokenizers import Tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM

    shutil.copytree(smollm2_tokenizer_dir(), dest)
    tok = Tokenizer.from_file(str(dest / "tokenizer.json"))
    config_path = dest / "tokenizer_config.json"
    special = json.loads(config_path.read_text()) | {"chat_template": CHAT_TEMPLATE}
    config_path.write_text(json.dumps(special))
    (dest / "chat_template.jinja").unlink(missing_ok=True)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
    )
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(dest)
    return model, tok


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny") / "tiny-llama"
    model, tok = build_tiny_llama(directory)
    return directory, model, tok


@pytest.fixture(scope="module")
def tiny_f32(tiny, tmp_path_factory) -> Path:
    from converters.gguf.hf_source import HfLlamaSource
    from converters.gguf.writer import write_gguf
    from edge_sdk.types import QuantScheme

    return write_gguf(HfLlamaSource(tiny[0]).load(), tmp_path_factory.mktemp("gguf") / "tiny.gguf", QuantScheme.F32)


def broken_copy(directory: Path, dest: Path) -> Path:
    shutil.copytree(directory, dest)
    return dest


def test_f32_round_trip_reproduces_torch_logits(tiny, tiny_f32):
    import torch

    from converters.gguf.evaluate import logits_of

    _, model, tok = tiny
    ids = tok.encode(VARIED_TEXT).ids
    got = logits_of(tiny_f32, np.asarray(ids, dtype=np.int32)).logits
    with torch.no_grad():
        want = model(torch.tensor([ids])).logits[0].numpy()
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=5e-4, rtol=0)  # llama.cpp keeps its KV cache in f16
    assert (got.argmax(-1) == want.argmax(-1)).all()


def test_tokenization_equals_source_tokenizer(tiny, tiny_f32):
    import llama_cpp

    _, _, tok = tiny
    llm = llama_cpp.Llama(str(tiny_f32), n_ctx=64, verbose=False, vocab_only=True)
    for text in (VARIED_TEXT, "  leading spaces", "tabs\t\tand\r\nCRLF", "123456789 1 22 333", "émigré café"):
        assert llm.tokenize(text.encode(), add_bos=False, special=False) == tok.encode(text).ids, text
    assert llm.metadata["tokenizer.chat_template"] == CHAT_TEMPLATE


def test_tiny_bundle_reports_metrics_per_quant_type(tiny, tmp_path):
    from converters.gguf.hf_source import HfLlamaSource
    from converters.llm_convert import convert_llm
    from device_profiles import load_profile

    bundle = convert_llm(
        HfLlamaSource(tiny[0]), ["f32", "f16", "q8_0", "q4_0"], tmp_path / "b", "tiny",
        [load_profile("rpi5")], eval_text=VARIED_TEXT * 4, allow_failed=True,
    )  # fmt: skip
    by_id = {v.id: v for v in bundle.manifest.variants}
    assert set(by_id) == {"gguf-f32", "gguf-fp16", "gguf-q8-0", "gguf-q4-0"}
    for v in by_id.values():
        assert v.accuracy is not None and [f.path.rsplit("/", 1)[-1] for f in v.files] == ["model.gguf"]
        assert {"mean_kl", "top1_agreement", "perplexity"} <= {m.name for m in v.accuracy.metrics}
        assert v.fit["rpi5"].fits
    f32 = by_id["gguf-f32"].accuracy
    assert f32 is not None and f32.passed and f32.metric("max_abs_logit_diff").value == 0.0  # type: ignore[union-attr]
    kl = {k: v.accuracy.metric("mean_kl").value for k, v in by_id.items()}  # type: ignore[union-attr]
    assert kl["gguf-f32"] <= kl["gguf-fp16"] < kl["gguf-q8-0"] < kl["gguf-q4-0"]
    assert by_id["gguf-q4-0"].size_bytes < by_id["gguf-q8-0"].size_bytes < by_id["gguf-f32"].size_bytes


def test_variant_outside_tolerance_fails_with_numbers(tiny, tmp_path):
    from converters.gguf.hf_source import HfLlamaSource
    from converters.llm_convert import convert_llm

    with pytest.raises(AccuracyGateError, match=r"gguf-q4-0 .*mean_kl=[0-9.e-]+ .*OUTSIDE"):
        convert_llm(HfLlamaSource(tiny[0]), ["q4_0"], tmp_path / "b", "tiny", tolerance_scale=1e-6)
    assert not (tmp_path / "b").exists()


def test_sentencepiece_vocabulary_round_trips(tmp_path):
    spm = pytest.importorskip("sentencepiece", reason="sentencepiece is not installed; the SPM path is untested")
    import io

    import torch

    from converters.gguf.evaluate import logits_of
    from converters.gguf.hf_source import HfLlamaSource
    from converters.gguf.writer import write_gguf
    from edge_sdk.types import QuantScheme

    text = [line for m in (json, textwrap, inspect) for line in (inspect.getdoc(m) or "").splitlines() if line]
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(text), model_writer=buf, vocab_size=512, model_type="bpe", byte_fallback=True,
        hard_vocab_limit=False, minloglevel=2, character_coverage=1.0, bos_id=1, eos_id=2, unk_id=0, pad_id=-1,
        remove_extra_whitespaces=False, normalization_rule_name="identity",  # as LLaMA trained its SPM
    )  # fmt: skip
    d = tmp_path / "spm-llama"
    d.mkdir()
    (d / "tokenizer.model").write_bytes(buf.getvalue())
    sp = spm.SentencePieceProcessor(model_proto=buf.getvalue())
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(1)
    config = LlamaConfig(vocab_size=sp.vocab_size(), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256)  # fmt: skip
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(d)
    path = write_gguf(HfLlamaSource(d).load(), tmp_path / "spm.gguf", QuantScheme.F32)

    import llama_cpp

    llm = llama_cpp.Llama(str(path), n_ctx=64, verbose=False, vocab_only=True)
    sample = "Hello wörld 12345 tabs and   spaces 日本 x=3.14"
    assert llm.tokenize(sample.encode(), add_bos=False, special=False) == sp.encode(sample)
    ids = [1, *sp.encode(sample)]
    got = logits_of(path, np.asarray(ids, dtype=np.int32)).logits
    with torch.no_grad():
        want = model(torch.tensor([ids])).logits[0].numpy()
    np.testing.assert_allclose(got, want, atol=5e-4, rtol=0)


def test_unknown_quant_type_names_the_valid_ones(tiny, tmp_path):
    from converters.gguf.hf_source import HfLlamaSource
    from converters.llm_convert import convert_llm

    with pytest.raises(ConfigError, match=r"'q9_9'.*'q4_k_m'"):
        convert_llm(HfLlamaSource(tiny[0]), ["q9_9"], tmp_path / "b", "tiny")


def test_unsupported_architecture_is_named(tiny, tmp_path):
    from converters.gguf.hf_source import HfLlamaSource

    d = broken_copy(tiny[0], tmp_path / "m")
    config = json.loads((d / "config.json").read_text())
    config["architectures"] = ["MixtralForCausalLM"]
    (d / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelSourceError, match=r"'MixtralForCausalLM'.*supported: .*'LlamaForCausalLM'.*'Qwen3For"):
        HfLlamaSource(d)


def test_missing_tokenizer_is_refused(tiny, tmp_path):
    from converters.gguf.hf_source import HfLlamaSource

    d = broken_copy(tiny[0], tmp_path / "m")
    (d / "tokenizer.json").unlink()
    with pytest.raises(ModelSourceError, match="no tokenizer"):
        HfLlamaSource(d)


def test_mismatched_shapes_are_refused(tiny, tmp_path):
    from converters.gguf.hf_source import HfLlamaSource

    d = broken_copy(tiny[0], tmp_path / "m")
    config = json.loads((d / "config.json").read_text())
    config["intermediate_size"] = 96
    (d / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        ModelSourceError,
        match=r"mlp\.\w+\.weight' in model.safetensors has shape \[\d+, \d+\]; config.json implies \[.*96",
    ):
        HfLlamaSource(d).load()


def test_truncated_safetensors_is_refused(tiny, tmp_path):
    from converters.gguf.hf_source import HfLlamaSource

    d = broken_copy(tiny[0], tmp_path / "m")
    weights = d / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    with pytest.raises(ModelSourceError, match="truncated"):
        HfLlamaSource(d).load()


def test_truncated_gguf_is_refused(tiny_f32, tmp_path):
    from converters.gguf.gguf_source import GgufFileSource

    cut = tmp_path / "cut.gguf"
    cut.write_bytes(tiny_f32.read_bytes()[: tiny_f32.stat().st_size // 2])
    with pytest.raises(ModelSourceError, match="truncated|not a readable"):
        GgufFileSource(cut)


@pytest.mark.parametrize(("tensors", "kvs"), [(2**62, 3), (3, 2**63 - 1), (10**5, 10**5)])
def test_absurd_gguf_header_counts_are_refused_before_reading(tmp_path, tensors, kvs):
    from converters.gguf.gguf_source import GgufFileSource

    path = tmp_path / "hostile.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, tensors, kvs) + b"\0" * 4096)
    with pytest.raises(ModelSourceError, match=f"claims {tensors} tensors and {kvs} metadata entries"):
        GgufFileSource(path)


def test_not_a_gguf_is_refused(tmp_path):
    from converters.gguf.gguf_source import GgufFileSource

    path = tmp_path / "x.gguf"
    path.write_bytes(b"PK\3\4 not a gguf at all")
    with pytest.raises(ModelSourceError, match="not a GGUF file"):
        GgufFileSource(path)


# SmolLM2: the packaged Q4_1 file, dequantized, re-quantized, measured and run.


@pytest.fixture(scope="module")
def smollm2_bundle(tmp_path_factory):
    from edge_sdk.api import convert_llm

    return convert_llm("zoo:smollm2", quantize="q8_0,q4_0,q4_k_m", output=tmp_path_factory.mktemp("smol") / "b")


@pytest.mark.slow
def test_smollm2_requantized_variants_pass_and_answer_paris(smollm2_bundle):
    from edge_sdk.api import load

    variants = {v.id: v for v in smollm2_bundle.manifest.variants}
    assert list(variants) == ["gguf-q8-0", "gguf-q4-0", "gguf-q4-k-m"]
    for v in variants.values():
        assert v.accuracy is not None and v.accuracy.passed
        assert v.recipe.options["quantizer"] == ("llama.cpp" if v.id == "gguf-q4-k-m" else "gguf-py")
        assert "already quantized (Q4_1)" in v.recipe.options["warning"]  # returned, not only printed
    kl = {k: v.accuracy.metric("mean_kl").value for k, v in variants.items()}
    assert kl["gguf-q8-0"] < kl["gguf-q4-k-m"] < kl["gguf-q4-0"]
    for variant_id in ("gguf-q8-0", "gguf-q4-k-m"):
        with load(smollm2_bundle, variant_id) as session:
            text = "".join(session.generate("The capital of France is", max_tokens=8, temperature=0))
        assert "Paris" in text, (variant_id, text)


@pytest.mark.slow
def test_smollm2_q4_k_m_is_written_by_llama_cpp(smollm2_bundle):
    import gguf

    variant = smollm2_bundle.variant("gguf-q4-k-m")
    reader = gguf.GGUFReader(smollm2_bundle.root / variant.files[0].path)
    kinds = {t.tensor_type.name for t in reader.tensors}
    assert "Q4_K" in kinds and "Q6_K" in kinds  # the _M mix, with fallbacks for 576-wide rows
    assert reader.fields["general.file_type"].contents() == int(gguf.LlamaFileType.MOSTLY_Q4_K_M)
    assert "{% for message in messages %}" in reader.fields["tokenizer.chat_template"].contents()


def test_a_transformers_model_object_converts_with_its_tokenizer(tiny, tmp_path):
    import edge_sdk
    from edge_sdk.errors import ConfigError

    _directory, model, tok = tiny
    with pytest.raises(ConfigError, match="needs its tokenizer"):
        edge_sdk.convert_llm(model, quantize="f32", output=tmp_path / "none")
    bundle = edge_sdk.convert_llm(model, tokenizer=tok, quantize="f32", output=tmp_path / "b", name="tiny")
    variant = bundle.variants[0]
    assert variant.accuracy is not None and variant.accuracy.passed
    with edge_sdk.load(bundle) as session:
        assert len(list(session.generate("The", max_tokens=4, temperature=0))) >= 1


def test_converting_the_q4_1_default_says_it_is_already_4_bit(tmp_path):
    from typer.testing import CliRunner

    from edge_sdk.apps.cli.main import app

    result = CliRunner().invoke(app, ["convert", "zoo:smollm2", "-b", "gguf", "-q", "q9_9", "-o", str(tmp_path / "b")])
    assert result.exit_code == 1 and "'q9_9'" in result.output
    assert "already quantized (Q4_1)" in result.output and "for format, not quality" in result.output


@pytest.mark.slow
def test_the_default_as_shipped_is_a_bundle_named_for_what_it_is(tmp_path):
    import edge_sdk

    bundle = edge_sdk.convert_llm("zoo:smollm2", quantize="as-is", profile="rpi4", output=tmp_path / "b")
    assert bundle.name == "smollm2-135m-instruct-q4-1"
    (variant,) = bundle.variants
    assert variant.id == "gguf-q4-1" and variant.recipe.precision == "q4_1" and variant.fit["rpi4"].fits
