"""`--max-accuracy-drop` on GGUF: a variant that misses the bound keeps its most sensitive layers at f16 until it
meets it — here a tiny LLaMA with one block planted to be ruined by 8-bit blocks, which must be the one kept."""

from __future__ import annotations

import shutil
from pathlib import Path

import gguf
import pytest

import edge_sdk

pytestmark = pytest.mark.slow  # one conversion with ~6 trials of a 3M-parameter model (~30 s on 2 cores)

SENSITIVE = "blk.1"
HUGE = 1e4  # the planted weights' scale; their input channel's norm gain is divided by it: the same function
DROP = 0.08  # q8_0's own top-1 rung (converters.gguf.quality): random weights leave near-ties that any rounding flips


def build_one_sensitive_block(dest: Path) -> None:
    """A 2-layer LLaMA (SmolLM2's tokenizer) whose block 1 carries, in one input channel of each 32-weight block
    of every row of its projections, a weight 10^4 times its neighbours, fed by a channel its RMSNorm gain scales
    down by as much. In float it is the same network; in any 8-bit block format (q8_0: one scale per 32 weights)
    the neighbours round to zero, so quantizing block 1 ruins it, while the other layers lose almost nothing."""
    import torch
    from llm_families import smollm2_tokenizer_dir
    from tokenizers import Tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM

    shutil.copytree(smollm2_tokenizer_dir(), dest)
    vocab = Tokenizer.from_file(str(dest / "tokenizer.json")).get_vocab_size()
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=False, bos_token_id=1,
        eos_token_id=2, initializer_range=0.05,  # more peaked than the default 0.02: fewer near-ties
    )  # fmt: skip
    model = LlamaForCausalLM(config).eval()
    block = model.model.layers[1]
    channels = [5, 40]  # one in each 32-wide quantization block of a 64-wide row
    with torch.no_grad():
        for norm, linears in (
            (block.input_layernorm, (block.self_attn.q_proj, block.self_attn.k_proj, block.self_attn.v_proj)),
            (block.post_attention_layernorm, (block.mlp.gate_proj, block.mlp.up_proj)),
        ):
            norm.weight[channels] /= HUGE
            for linear in linears:
                linear.weight[:, channels] *= HUGE
    model.save_pretrained(dest)


@pytest.fixture(scope="module")
def sensitive_llama(tmp_path_factory):
    path = tmp_path_factory.mktemp("accuracy-aware") / "one-sensitive-block"
    build_one_sensitive_block(path)
    return path


def test_the_planted_sensitive_block_stays_f16_and_the_variant_meets_the_bound(sensitive_llama, tmp_path):
    bundle = edge_sdk.convert_llm(sensitive_llama, quantize="q8_0", output=tmp_path / "b", max_accuracy_drop=DROP)
    (variant,) = bundle.variants
    options = variant.recipe.options
    assert options["float_layers"] == SENSITIVE, {k: v for k, v in options.items() if k != "tensor_types"}
    assert options["sensitivity"].startswith(f"{SENSITIVE}="), options["sensitivity"]  # ranked first
    assert "kept 1 of 4 layers float" in options["accuracy_aware"]
    all_q8 = dict(item.split("=") for item in options["all_layers_int8"].split(","))
    assert float(all_q8["mean_kl"]) > 0.02  # fully quantized it missed q8_0's KL bound: the search had to act

    assert variant.accuracy is not None and variant.accuracy.passed
    top1 = variant.accuracy.metric("top1_agreement")
    assert top1 is not None and 1.0 - top1.value <= DROP + 1e-9 and top1.tolerance == DROP

    types = {t.name: t.tensor_type.name.lower() for t in gguf.GGUFReader(bundle.root / variant.files[0].path).tensors}
    matrices = {n: t for n, t in types.items() if not n.endswith("norm.weight")}
    assert {t for n, t in matrices.items() if n.startswith(f"{SENSITIVE}.")} == {"f16"}
    assert {t for n, t in matrices.items() if not n.startswith(f"{SENSITIVE}.")} == {"q8_0"}
