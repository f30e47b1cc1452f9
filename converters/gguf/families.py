"""The decoder families a Hugging Face directory may hold, and what each needs beyond gguf-py's name map.

Tensor names come from gguf-py's `TensorNameMap` (the table llama.cpp's converter uses); this module adds, per
family, the GGUF architecture, the hyper-parameter keys, the expected shape of every tensor and the few weight
transforms llama.cpp's `convert_hf_to_gguf.py` (revision 0c1e57098, vendored by llama-cpp-python 0.3.36) applies:
the rotary permutation of Q/K (llama), +1 on Gemma's norms, Gemma 3's embedding cut to the real vocabulary, the
Llama 3.x `rope_freqs` table and Phi-3's long-context `rope_factors_long`/`rope_factors_short`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from converters.gguf.model import KeyValue
from edge_sdk.errors import ModelSourceError, choices

COMMON = ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down")


@dataclass(frozen=True)
class Family:
    arch: str  # GGUF general.architecture
    layer_tensors: tuple[str, ...] = COMMON
    permute_qk: bool = False  # llama.cpp's llama graph wants Q/K rows in its rotary order
    norm_shift: float = 0.0  # Gemma's RMSNorm multiplies by (1 + w): llama.cpp stores 1 + w
    drop_lm_head: bool = False  # Gemma 2: llama.cpp always ties the output to the embedding
    cut_embedding: bool = False  # Gemma 3: rows beyond the tokenizer's vocabulary are dropped


LLAMA = Family("llama", permute_qk=True)
FAMILIES: dict[str, Family] = {
    "LlamaForCausalLM": LLAMA,
    "MistralForCausalLM": LLAMA,
    "SmolLM3ForCausalLM": Family("smollm3", permute_qk=True),
    "Qwen2ForCausalLM": Family("qwen2", (*COMMON, "attn_q.bias", "attn_k.bias", "attn_v.bias")),
    "Qwen3ForCausalLM": Family("qwen3", (*COMMON, "attn_q_norm", "attn_k_norm")),
    "Gemma2ForCausalLM": Family(
        "gemma2", (*COMMON, "post_attention_norm", "post_ffw_norm"), norm_shift=1.0, drop_lm_head=True
    ),
    "Gemma3ForCausalLM": Family(
        "gemma3",
        (*COMMON, "post_attention_norm", "post_ffw_norm", "attn_q_norm", "attn_k_norm"),
        norm_shift=1.0,
        cut_embedding=True,
    ),
    "Phi3ForCausalLM": Family("phi3", ("attn_norm", "attn_qkv", "attn_output", "ffn_norm", "ffn_up", "ffn_down")),
}


def family_of(config: dict[str, Any], where: str) -> tuple[str, Family]:
    archs = config.get("architectures") or [config.get("model_type", "<none>")]
    family = FAMILIES.get(archs[0])
    if family is None:
        raise ModelSourceError(
            f"{where}: architecture {archs[0]!r} is not supported by the GGUF converter; supported: "
            f"{choices(FAMILIES)} (or bring a .gguf llama.cpp loads: `-q as-is`)"
        )
    if any(k in config for k in ("num_local_experts", "num_experts")):
        raise ModelSourceError(f"{where}: mixture-of-experts models are not supported by the GGUF converter")
    return archs[0], family


def rope_parameters(config: dict[str, Any]) -> dict[str, Any]:
    """transformers 5 writes `rope_parameters`, older releases `rope_theta` + `rope_scaling`: read both."""
    rope = dict(config.get("rope_parameters") or config.get("rope_scaling") or {})
    if "type" in rope and "rope_type" not in rope:
        rope["rope_type"] = rope["type"]
    for key in ("rope_theta", "partial_rotary_factor", "original_max_position_embeddings"):  # as the reference
        if key not in rope and config.get(key) is not None:
            rope[key] = config[key]
    return rope


@dataclass(frozen=True)
class Dims:
    vocab: int
    hidden: int
    layers: int
    ffn: int
    heads: int
    kv_heads: int
    head_dim: int

    @classmethod
    def of(cls, config: dict[str, Any], where: str) -> Dims:
        try:
            heads, hidden = int(config["num_attention_heads"]), int(config["hidden_size"])
            return cls(
                vocab=int(config["vocab_size"]), hidden=hidden, layers=int(config["num_hidden_layers"]),
                ffn=int(config["intermediate_size"]), heads=heads,
                kv_heads=int(config.get("num_key_value_heads") or heads),
                head_dim=int(config.get("head_dim") or hidden // heads),
            )  # fmt: skip
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
            raise ModelSourceError(f"{where}: config.json lacks or mangles {exc}") from None

    def layer_shapes(self) -> dict[str, tuple[int, ...]]:
        q, kv, h, f = self.heads * self.head_dim, self.kv_heads * self.head_dim, self.hidden, self.ffn
        return {
            "attn_norm": (h,), "attn_q": (q, h), "attn_k": (kv, h), "attn_v": (kv, h), "attn_output": (h, q),
            "attn_qkv": (q + 2 * kv, h), "attn_q.bias": (q,), "attn_k.bias": (kv,), "attn_v.bias": (kv,),
            "attn_q_norm": (self.head_dim,), "attn_k_norm": (self.head_dim,), "ffn_norm": (h,),
            "post_attention_norm": (h,), "post_ffw_norm": (h,), "ffn_gate": (f, h), "ffn_down": (h, f),
            "ffn_up": (f, h),
        }  # fmt: skip


def expected_shapes(family: Family, dims: Dims, *, tied: bool, vocab_rows: int) -> dict[str, tuple[int, ...]]:
    """GGUF name -> shape (torch order) of every tensor the family's checkpoint must provide."""
    layer = dims.layer_shapes()
    if family.arch == "phi3":
        layer["ffn_up"] = (2 * dims.ffn, dims.hidden)  # gate and up fused, as in the checkpoint
    shapes: dict[str, tuple[int, ...]] = {"token_embd.weight": (vocab_rows, dims.hidden)}
    for i in range(dims.layers):
        for t in family.layer_tensors:
            shapes[f"blk.{i}.{t if t.endswith('.bias') else t + '.weight'}"] = layer[t]
    shapes["output_norm.weight"] = (dims.hidden,)
    if not tied and not family.drop_lm_head:
        shapes["output.weight"] = (dims.vocab, dims.hidden)
    return shapes


def permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder rotary halves as llama.cpp's convert_hf_to_gguf.py does for Q and K projection weights."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def transform(family: Family, dims: Dims, name: str, array: np.ndarray) -> np.ndarray:
    """The weight as llama.cpp wants it under GGUF name `name`."""
    if family.permute_qk and name.endswith(("attn_q.weight", "attn_q.bias")):
        return permute_qk(array, dims.heads)
    if family.permute_qk and name.endswith(("attn_k.weight", "attn_k.bias")):
        return permute_qk(array, dims.kv_heads)
    if family.norm_shift and name.endswith("norm.weight"):
        return array + np.float32(family.norm_shift)
    return array


def llama3_rope_factors(rope: dict[str, Any], dims: Dims) -> np.ndarray | None:
    """Llama 3.x frequency scaling as the `rope_freqs` tensor (float32 arithmetic, as the reference's torch)."""
    if str(rope.get("rope_type", "")).lower() != "llama3":
        return None
    base, dim = np.float32(rope.get("rope_theta", 10000.0)), dims.head_dim
    freqs = np.float32(1.0) / (base ** (np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim)))
    factor = float(rope.get("factor", 8.0))
    low, high = float(rope.get("low_freq_factor", 1.0)), float(rope.get("high_freq_factor", 4.0))
    old = float(rope.get("original_max_position_embeddings", 8192))
    out = []
    for freq in freqs:
        wavelen = np.float32(2 * math.pi) / freq
        if wavelen < old / high:
            out.append(1.0)
        elif wavelen > old / low:
            out.append(factor)
        else:
            smooth = (np.float32(old) / wavelen - np.float32(low)) / np.float32(high - low)
            out.append(float(np.float32(1) / ((np.float32(1) - smooth) / np.float32(factor) + smooth)))
    return np.asarray(out, dtype=np.float32)


def hparam_metadata(family: Family, config: dict[str, Any], dims: Dims, name: str) -> dict[str, KeyValue]:
    """The architecture keys llama.cpp's converter writes for this family, written by gguf's own writer methods."""
    import gguf

    w = gguf.GGUFWriter(path=None, arch=family.arch)
    w.add_name(name)
    rope = rope_parameters(config)
    quiet = logging.getLogger("gguf.gguf_writer")
    level, quiet.level = quiet.level, logging.ERROR  # Gemma 3 sets some keys twice, as the reference does
    try:
        _WRITERS.get(family.arch, _text_model)(w, config, dims, rope)
    finally:
        quiet.setLevel(level)
    return {k: KeyValue(v.value, v.type, v.sub_type) for k, v in w.kv_data[0].items() if k != "general.architecture"}


def _text_model(w: Any, c: dict[str, Any], d: Dims, rope: dict[str, Any]) -> None:
    """TextModel.set_gguf_parameters of the reference, for a dense decoder."""
    import gguf

    w.add_block_count(d.layers)
    w.add_context_length(int(c.get("max_position_embeddings", 2048)))
    w.add_embedding_length(d.hidden)
    w.add_feed_forward_length(d.ffn)
    w.add_head_count(d.heads)
    if "num_key_value_heads" in c:
        w.add_head_count_kv(d.kv_heads)
    kind = rope.get("rope_type")
    if kind == "linear" and rope.get("factor") is not None:
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(rope["factor"])
    elif kind == "yarn" and rope.get("factor") is not None:
        w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(rope["factor"])
        w.add_rope_scaling_orig_ctx_len(rope["original_max_position_embeddings"])
    elif kind not in (None, "default", "llama3"):
        raise ModelSourceError(
            f"rope scaling {kind!r} is not supported by the GGUF converter; supported: 'default', 'linear', "
            "'yarn', 'llama3'"
        )
    if "rope_theta" in rope:
        w.add_rope_freq_base(rope["rope_theta"])
    if "rms_norm_eps" in c:
        w.add_layer_norm_rms_eps(c["rms_norm_eps"])
    if c.get("head_dim") is not None:
        w.add_key_length(d.head_dim)
        w.add_value_length(d.head_dim)


def _llama(w: Any, c: dict[str, Any], d: Dims, rope: dict[str, Any]) -> None:
    _text_model(w, c, d, rope)
    w.add_vocab_size(d.vocab)
    w.add_rope_dimension_count(d.head_dim)


def _gemma2(w: Any, c: dict[str, Any], d: Dims, rope: dict[str, Any]) -> None:
    w.add_context_length(c["max_position_embeddings"])
    w.add_embedding_length(d.hidden)
    w.add_block_count(d.layers)
    w.add_feed_forward_length(d.ffn)
    w.add_head_count(d.heads)
    w.add_head_count_kv(d.kv_heads)
    w.add_layer_norm_rms_eps(c["rms_norm_eps"])
    w.add_key_length(d.head_dim)
    w.add_value_length(d.head_dim)
    w.add_attn_logit_softcapping(c["attn_logit_softcapping"])
    w.add_final_logit_softcapping(c["final_logit_softcapping"])
    w.add_sliding_window(c["sliding_window"])


def _gemma3(w: Any, c: dict[str, Any], d: Dims, rope: dict[str, Any]) -> None:
    full, local = rope.get("full_attention", rope), rope.get("sliding_attention", {})
    _text_model(w, c, d, full)
    if "rope_theta" in local:
        w.add_rope_freq_base_swa(local["rope_theta"])
    w.add_context_length(c.get("max_position_embeddings", 131072))
    w.add_head_count(c.get("num_attention_heads", 8))
    w.add_layer_norm_rms_eps(c.get("rms_norm_eps", 1e-6))
    w.add_key_length(c.get("head_dim", 256))
    w.add_value_length(c.get("head_dim", 256))
    w.add_rope_freq_base(full.get("rope_theta", 1_000_000.0))
    if c.get("attn_logit_softcapping") is not None:
        raise ModelSourceError("a Gemma 3 config with attn_logit_softcapping is not one llama.cpp runs")
    if c.get("final_logit_softcapping"):
        w.add_final_logit_softcapping(c["final_logit_softcapping"])
    if c.get("sliding_window_pattern") != 1:
        w.add_sliding_window(c["sliding_window"])
    w.add_head_count_kv(c.get("num_key_value_heads", 4))


def phi3_rope_dims(rope: dict[str, Any], dims: Dims) -> int:
    """Rotated dimensions per head: all of them, or Phi-4-mini's `partial_rotary_factor` share."""
    return int(rope.get("partial_rotary_factor", 1.0) * dims.hidden) // dims.heads


def phi3_rope_factors(config: dict[str, Any], dims: Dims) -> dict[str, np.ndarray]:
    """Phi-3 long-context rope ('longrope'/'su') as the `rope_factors_long`/`rope_factors_short` tensors llama.cpp
    picks between by context length; {} without long factors."""
    rope = rope_parameters(config)
    long, short = rope.get("long_factor"), rope.get("short_factor")
    if not long:
        return {}
    half = phi3_rope_dims(rope, dims) / 2
    if short is None or len(long) != half or len(short) != half:
        raise ModelSourceError(
            f"Phi-3 rope factors must each hold {half:g} values (half the rotated dimensions); config.json has "
            f"long_factor {len(long)}, short_factor {len(short or [])}"
        )
    return {"rope_factors_long.weight": np.asarray(long, dtype=np.float32),
            "rope_factors_short.weight": np.asarray(short, dtype=np.float32)}  # fmt: skip


def _phi3_attn_factor(c: dict[str, Any], rope: dict[str, Any]) -> float | None:
    """The attention scale llama.cpp applies with long-context factors (None without them)."""
    if not rope.get("long_factor"):
        return None
    kind = str(rope.get("rope_type", "")).lower()
    scale = c["max_position_embeddings"] / rope["original_max_position_embeddings"]
    if kind in ("su", "longrope"):
        return math.sqrt(1 + math.log(scale) / math.log(rope["original_max_position_embeddings"])) if scale > 1 else 1.0
    if kind == "yarn":
        return 0.1 * math.log(scale) + 1.0 if scale > 1 else 1.0
    raise ModelSourceError(f"Phi-3 rope scaling {kind!r} is not supported; supported: 'longrope', 'su', 'yarn'")


def _phi3(w: Any, c: dict[str, Any], d: Dims, rope: dict[str, Any]) -> None:
    attn_factor = _phi3_attn_factor(c, rope)
    w.add_context_length(c["max_position_embeddings"])
    original = c.get("original_max_position_embeddings", rope.get("original_max_position_embeddings"))
    w.add_rope_scaling_orig_ctx_len(original)
    w.add_embedding_length(d.hidden)
    w.add_feed_forward_length(d.ffn)
    w.add_block_count(d.layers)
    w.add_head_count(d.heads)
    w.add_head_count_kv(d.kv_heads)
    w.add_layer_norm_rms_eps(c["rms_norm_eps"])
    w.add_rope_dimension_count(phi3_rope_dims(rope, d))
    w.add_rope_freq_base(rope["rope_theta"])
    w.add_sliding_window(c.get("sliding_window") or 0)
    if attn_factor is not None:
        w.add_rope_scaling_attn_factors(attn_factor)


_WRITERS: dict[str, Callable[[Any, dict[str, Any], Dims, dict[str, Any]], None]] = {
    "llama": _llama, "smollm3": _llama, "gemma2": _gemma2, "gemma3": _gemma3, "phi3": _phi3,
}  # fmt: skip
