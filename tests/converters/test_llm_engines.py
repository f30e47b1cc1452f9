"""One language model, three engines: a tiny random-weight Llama (transformers' LlamaConfig, SmolLM2's tokenizer)
converted once per test run to gguf, executorch (static KV cache, XNNPACK) and onnx (onnxruntime-genai) variants,
each judged against the same reference, and run through the same Session.generate / chat."""

from __future__ import annotations

import numpy as np
import pytest
from llm_families import FAMILIES, build_family, smollm2_tokenizer_dir

import edge_sdk
from edge_sdk.errors import ConfigError, ContextLengthError, ModelSourceError

pytestmark = pytest.mark.slow  # three ExecuTorch exports, two onnxruntime-genai builds (~2 min of CPU)

PROMPT, GREEDY = "The quick brown fox", 16  # tiny_llama / engines_bundle: tests/conftest.py
FP32_VARIANTS = ("gguf-f32", "executorch-f32", "onnx-f32")
FOUR_BIT_VARIANTS = ("executorch-8da4w", "onnx-int4")


def _greedy_tokens(session, prompt: list[int], n: int) -> list[int]:
    logits = session._start(prompt)
    tokens = []
    for _ in range(n):
        tokens.append(int(np.argmax(logits)))
        logits = session._next(tokens[-1])
    return tokens


@pytest.mark.parametrize("variant", ["executorch-f32", "onnx-f32"])
def test_fp32_greedy_tokens_equal_transformers(engines_bundle, tiny_llama, variant):
    _, prompt, expected = tiny_llama
    with edge_sdk.load(engines_bundle.root, variant) as session:
        assert _greedy_tokens(session, prompt, GREEDY) == expected


@pytest.mark.parametrize("variant", FP32_VARIANTS)
def test_greedy_text_is_the_same_on_the_three_engines(engines_bundle, tiny_llama, variant):
    directory, prompt, expected = tiny_llama
    from tokenizers import Tokenizer

    # Decoded together with the prompt, as a streaming detokenizer sees it, then the prompt's text removed.
    tok = Tokenizer.from_file(str(directory / "tokenizer.json"))
    want = tok.decode(prompt + expected)[len(tok.decode(prompt)) :]
    with edge_sdk.load(engines_bundle.root, variant) as session:
        text = "".join(session.generate(PROMPT, max_tokens=GREEDY, temperature=0))
        assert text == want
        assert session.last_stats.generated_tokens == GREEDY
        assert session.last_stats.finish_reason == "length"


def test_every_variant_is_judged_against_one_reference(engines_bundle):
    variants = {v.id: v for v in engines_bundle.manifest.variants}
    assert set(variants) == {*FP32_VARIANTS, *FOUR_BIT_VARIANTS, "executorch-int8-dynamic"}
    references = {v.accuracy.reference for v in variants.values()}
    assert len(references) == 1 and "llama.cpp" in references.pop()
    for v in variants.values():
        assert {"mean_kl", "top1_agreement", "perplexity"} <= {m.name for m in v.accuracy.metrics}
        assert v.golden_outputs is not None  # the device re-checks the same golden tokens
    for vid in FP32_VARIANTS:
        assert variants[vid].accuracy.passed, (vid, variants[vid].accuracy.metrics)
    # Golden logits of fp32 on every engine agree (float rounding only) with the reference's.
    golden = engines_bundle.golden_outputs(variants["gguf-f32"])["logits"]
    for vid in ("executorch-f32", "onnx-f32"):
        theirs = engines_bundle.golden_outputs(variants[vid])["logits"]
        assert theirs.shape == golden.shape
        np.testing.assert_allclose(theirs, golden, atol=0.05 * np.abs(golden).max())


@pytest.mark.parametrize("variant", ["executorch-int8-dynamic", "executorch-8da4w"])
def test_quantized_greedy_tokens_equal_the_eager_model_quantized_the_same_way(engines_bundle, tiny_llama, variant):
    """A quantized variant's reference is transformers' model with its linears quantized by the same source
    transform (ExecuTorch's quantize: torchao 8da8w / 8da4w, HQQ scales). Weights then agree bit for bit and
    only the activations' int8 rounding and summation order may differ, which 16 greedy tokens do not see."""
    import torch
    from transformers import AutoModelForCausalLM

    from converters.llm_executorch import quantize_like_export

    directory, prompt, _ = tiny_llama
    v = next(v for v in engines_bundle.manifest.variants if v.id == variant)
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    model = quantize_like_export(model, v.recipe.quantization)
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=GREEDY, do_sample=False, eos_token_id=None)
    with edge_sdk.load(engines_bundle.root, variant) as session:
        assert _greedy_tokens(session, prompt, GREEDY) == out[0, len(prompt) :].tolist()


@pytest.mark.parametrize(
    ("variant", "rung"), [("executorch-8da4w", "q4_0"), ("onnx-int4", "q4_0"), ("executorch-int8-dynamic", "q8_0")]
)
def test_quantized_variants_stay_within_their_gguf_rung(engines_bundle, variant, rung):
    """Against the float reference, random weights leave near-ties that quantized weights flip (int8 dynamic
    changes the 2nd greedy token of transformers' fp32 here; top-1 is no verdict): the distribution's distance
    to it is, within the KL of the GGUF type of the same layout (Q4_0: 4-bit in blocks of 32; Q8_0: 8-bit)."""
    from converters.gguf.quality import LLM_TOLERANCE
    from edge_sdk.types import QuantScheme

    v = next(v for v in engines_bundle.manifest.variants if v.id == variant)
    kl = next(m for m in v.accuracy.metrics if m.name == "mean_kl")
    assert 0 < kl.value <= LLM_TOLERANCE[QuantScheme(rung)].max_kl
    assert v.recipe.precision == ("int8" if rung == "q8_0" else "int4")


def test_the_executorch_delegation_report_names_what_runs_in_xnnpack(engines_bundle):
    """Every linear layer (7 a block and the output) runs in XNNPACK in every variant, and no matrix product is
    left on portable kernels but the custom SDPA; every variant also gives XNNPACK the elementwise operators
    (quantized ones too: left on portable kernels, they made SmolLM2's 8da4w decode slower than its fp32).
    `inspect` shows the share, delegation.json the operators."""
    import json

    from typer.testing import CliRunner

    from edge_sdk.apps.cli.main import app

    for v in engines_bundle.manifest.variants:
        if v.backend.value != "executorch":
            continue
        report = json.loads(
            (engines_bundle.root / next(f.path for f in v.files if f.path.endswith("delegation.json"))).read_text()
        )
        assert report["delegated_by_operator"]["aten.linear"] == 7 * 2 + 1, v.id
        assert "aten.linear" not in report["portable_by_operator"], v.id
        matmuls = {"aten.linear", "aten.mm", "aten.bmm", "aten.addmm", "aten.matmul", "aten.convolution"}
        assert not matmuls & set(report["portable_by_operator"]), (v.id, report["portable_by_operator"])
        assert float(v.recipe.options["delegated_share_flops"]) == pytest.approx(report["delegated_share_flops"])
        assert "aten.mul.Tensor" in report["delegated_by_operator"], v.id
        assert "aten.mul.Tensor" not in report["portable_by_operator"], (v.id, report["portable_by_operator"])
    shown = CliRunner().invoke(app, ["inspect", str(engines_bundle.root)], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert shown.output.count("of compute in xnnpack") == 3


@pytest.mark.parametrize("variant", ["executorch-f32", "onnx-f32"])
def test_sampling_seed_stop_and_max_tokens(engines_bundle, variant):
    with edge_sdk.load(engines_bundle.root, variant) as session:
        first = "".join(session.generate(PROMPT, max_tokens=12, temperature=1.0, seed=7))
        again = "".join(session.generate(PROMPT, max_tokens=12, temperature=1.0, seed=7))
        other = "".join(session.generate(PROMPT, max_tokens=12, temperature=1.0, seed=8))
        assert first == again and first != other
        greedy = "".join(session.generate(PROMPT, max_tokens=12, temperature=0))
        stop = greedy[len(greedy) // 2 : len(greedy) // 2 + 3]
        cut = "".join(session.generate(PROMPT, max_tokens=12, temperature=0, stop=[stop]))
        assert cut == greedy[: greedy.index(stop)]
        assert session.last_stats.finish_reason == "stop"
        with pytest.raises(ContextLengthError, match="256"):
            list(session.generate(PROMPT, max_tokens=400))
        with pytest.raises(ConfigError, match="logit_bias"):
            session.generate(PROMPT, logit_bias={1: 2.0})


@pytest.mark.parametrize("variant", ["executorch-f32", "onnx-f32"])
def test_chat_uses_the_models_template(engines_bundle, variant):
    with edge_sdk.load(engines_bundle.root, variant) as session:
        reply = "".join(session.chat([{"role": "user", "content": "Hi"}], max_tokens=8, temperature=0))
        assert session.count_prompt_tokens(messages=[{"role": "user", "content": "Hi"}]) > 3
        assert session.last_stats.generated_tokens <= 8 and isinstance(reply, str)
        assert session.supports_grammar is False


def test_an_architecture_the_engine_lacks_is_refused_before_export(tmp_path):
    family = next(f for f in FAMILIES if f.name == "qwen3")  # q/k norms: not ExecuTorch's Llama here
    build_family(family, tmp_path / "qwen", {"smollm2": smollm2_tokenizer_dir()})
    with pytest.raises(ModelSourceError, match=r"Qwen3ForCausalLM.*executorch.*LlamaForCausalLM.*Qwen2ForCausalLM"):
        edge_sdk.convert_llm(tmp_path / "qwen", backend="executorch", quantize="f32", output=tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_a_context_longer_than_the_models_is_refused(tiny_llama, tmp_path):
    with pytest.raises(ConfigError, match=r"4096 tokens is longer .* \(512"):
        edge_sdk.convert_llm(tiny_llama[0], backend="onnx", quantize="f32", context=4096, output=tmp_path / "b")


def test_a_quantization_the_engine_lacks_is_refused(tiny_llama, tmp_path):
    with pytest.raises(ConfigError, match=r"q4_k_m.*executorch: 'f32', 'none', 'int8-dynamic', '8da4w'"):
        edge_sdk.convert_llm(tiny_llama[0], backend="executorch", quantize="q4_k_m", output=tmp_path / "b")
    with pytest.raises(ConfigError, match=r"onnx would get no variant"):
        edge_sdk.convert_llm(tiny_llama[0], backend=["executorch", "onnx"], quantize="8da4w", output=tmp_path / "b")


@pytest.mark.parametrize("variant", ["executorch-f32", "onnx-int4"])
def test_fit_counts_each_engines_kv_cache(engines_bundle, variant):
    """ExecuTorch's static cache and ORT GenAI's shared past/present buffer are float32 and allocated whole at
    the exported context (256 here), whatever context is asked; the tokenizer files are not weights."""
    from device_profiles.estimate import ModelFacts, estimate_memory

    v = next(v for v in engines_bundle.manifest.variants if v.id == variant)
    facts = ModelFacts.of_variant(v, engines_bundle.root)
    per_token = 2 * 2 * 2 * 16 * 4  # K and V × layers × kv heads × head dim × float32
    estimate = estimate_memory(facts, context=2048)
    assert estimate.context == 256 and estimate.parts["kv_cache"] == 256 * per_token
    weight_files = [f for f in v.files if not f.path.endswith((".json", ".jinja"))]
    assert facts.weights_bytes == sum(f.size for f in weight_files)


@pytest.mark.parametrize("variant", ["executorch-8da4w", "onnx-f32"])
def test_golden_set_is_rechecked_by_the_engine_on_the_device(engines_bundle, variant):
    report = edge_sdk.check_golden(engines_bundle.root, variant)  # what `verify --run` and `install` do
    assert report.passed, report.metrics


def test_a_qwen2_model_gives_transformers_greedy_tokens(tmp_path):
    """Qwen2 (q/k/v biases) on ONNX GenAI and on ExecuTorch (its Llama with attention_qkv_bias), one bundle."""
    import torch

    family = next(f for f in FAMILIES if f.name == "qwen2")
    model = build_family(family, tmp_path / "qwen", {"smollm2": smollm2_tokenizer_dir()})
    bundle = edge_sdk.convert_llm(
        tmp_path / "qwen", backend=["onnx", "executorch"], quantize="f32", output=tmp_path / "b", eval_tokens=32,
        context=128,
    )  # fmt: skip
    prompt = [504, 2365, 6354, 16438]
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=GREEDY, do_sample=False, eos_token_id=None)
    for variant in ("onnx-f32", "executorch-f32"):
        with edge_sdk.load(bundle.root, variant) as session:
            assert _greedy_tokens(session, prompt, GREEDY) == out[0, len(prompt) :].tolist(), variant
    assert all(v.accuracy.passed for v in bundle.manifest.variants)


def test_a_model_saved_after_transformers_read_a_gguf_builds_on_onnx(tiny_llama, tmp_path):
    """transformers keeps `quantization_config: gguf` in the config.json of a model it read from a GGUF and saved
    again (float weights): ONNX GenAI's builder refused such a directory as "gguf quantized"."""
    import json
    import shutil

    directory = shutil.copytree(tiny_llama[0], tmp_path / "from-gguf")
    config = json.loads((directory / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "gguf", "gguf_file": "model.gguf", "dequantize": False}
    (directory / "config.json").write_text(json.dumps(config))
    bundle = edge_sdk.convert_llm(directory, backend="onnx", quantize="f32", output=tmp_path / "b", eval_tokens=32)
    prompt, greedy = tiny_llama[1], tiny_llama[2]
    with edge_sdk.load(bundle.root, "onnx-f32") as session:
        assert _greedy_tokens(session, prompt, GREEDY) == greedy
