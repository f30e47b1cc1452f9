"""A Hugging Face-format LLaMA-family directory (config.json, *.safetensors, a tokenizer) as a GGUF source."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from converters.gguf.model import KeyValue, LlmModel
from converters.gguf.safetensors_io import read_safetensors
from converters.gguf.source_base import LlmSource
from converters.gguf.tokenizer import tokenizer_metadata
from edge_sdk.bundle.files import sha256_file
from edge_sdk.errors import ModelSourceError, choices

SUPPORTED_HF_ARCHITECTURES = {"LlamaForCausalLM": "llama"}
LAYER_TENSORS = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder rotary halves as llama.cpp's convert_hf_to_gguf.py does for Q and K projection weights."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


@dataclass(frozen=True)
class LlamaHParams:
    vocab: int
    hidden: int
    layers: int
    ffn: int
    heads: int
    kv_heads: int
    head_dim: int
    context: int
    eps: float
    rope_theta: float
    tied: bool

    @classmethod
    def from_config(cls, config: dict[str, Any], where: str) -> LlamaHParams:
        archs = config.get("architectures") or [config.get("model_type", "<none>")]
        if archs[0] not in SUPPORTED_HF_ARCHITECTURES:
            raise ModelSourceError(
                f"{where}: architecture {archs[0]!r} is not supported by the GGUF converter; "
                f"supported: {choices(SUPPORTED_HF_ARCHITECTURES)}"
            )
        rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
        kind = rope.get("rope_type", rope.get("type", "default"))
        if kind not in ("default", None):
            raise ModelSourceError(f"{where}: rope scaling {kind!r} is not supported; supported: 'default'")
        try:
            heads, hidden = int(config["num_attention_heads"]), int(config["hidden_size"])
            return cls(
                vocab=int(config["vocab_size"]), hidden=hidden, layers=int(config["num_hidden_layers"]),
                ffn=int(config["intermediate_size"]), heads=heads,
                kv_heads=int(config.get("num_key_value_heads") or heads),
                head_dim=int(config.get("head_dim") or hidden // heads),
                context=int(config.get("max_position_embeddings", 2048)),
                eps=float(config.get("rms_norm_eps", 1e-5)),
                rope_theta=float(rope.get("rope_theta", config.get("rope_theta", 10000.0))),
                tied=bool(config.get("tie_word_embeddings", False)),
            )  # fmt: skip
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelSourceError(f"{where}: config.json lacks or mangles {exc}") from None

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        layer = {
            "attn_norm.weight": (self.hidden,), "attn_q.weight": (q, self.hidden), "attn_k.weight": (kv, self.hidden),
            "attn_v.weight": (kv, self.hidden), "attn_output.weight": (self.hidden, q),
            "ffn_norm.weight": (self.hidden,), "ffn_gate.weight": (self.ffn, self.hidden),
            "ffn_up.weight": (self.ffn, self.hidden), "ffn_down.weight": (self.hidden, self.ffn),
        }  # fmt: skip
        shapes = {f"blk.{i}.{k}": v for i in range(self.layers) for k, v in layer.items()}
        shapes |= {"token_embd.weight": (self.vocab, self.hidden), "output_norm.weight": (self.hidden,)}
        if not self.tied:
            shapes["output.weight"] = (self.vocab, self.hidden)
        return shapes

    def metadata(self, name: str) -> dict[str, KeyValue]:
        import gguf

        u32, f32, s = gguf.GGUFValueType.UINT32, gguf.GGUFValueType.FLOAT32, gguf.GGUFValueType.STRING
        values = {
            "general.name": (name, s), "llama.vocab_size": (self.vocab, u32),
            "llama.context_length": (self.context, u32), "llama.embedding_length": (self.hidden, u32),
            "llama.block_count": (self.layers, u32), "llama.feed_forward_length": (self.ffn, u32),
            "llama.rope.dimension_count": (self.head_dim, u32), "llama.attention.head_count": (self.heads, u32),
            "llama.attention.head_count_kv": (self.kv_heads, u32), "llama.rope.freq_base": (self.rope_theta, f32),
            "llama.attention.layer_norm_rms_epsilon": (self.eps, f32),
            "llama.attention.key_length": (self.head_dim, u32), "llama.attention.value_length": (self.head_dim, u32),
        }  # fmt: skip
        return {k: KeyValue(v, t) for k, (v, t) in values.items()}


def gguf_name(hf_name: str) -> str | None:
    """The GGUF name of a Hugging Face LLaMA tensor, or None for tensors GGUF does not keep."""
    if hf_name == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf_name == "model.norm.weight":
        return "output_norm.weight"
    if hf_name == "lm_head.weight":
        return "output.weight"
    parts = hf_name.split(".", 3)
    if len(parts) == 4 and parts[:2] == ["model", "layers"] and parts[3] in LAYER_TENSORS:
        return f"blk.{parts[2]}.{LAYER_TENSORS[parts[3]]}"
    return None


@dataclass
class HfLlamaSource(LlmSource):
    """A LLaMA-family checkpoint directory, as written by transformers' save_pretrained."""

    directory: Path
    kind: str = field(default="hf-llama", init=False)

    def __post_init__(self) -> None:
        self.directory = Path(self.directory)
        config_path = self.directory / "config.json"
        if not config_path.is_file():
            raise ModelSourceError(f"{str(self.directory)!r} is not a Hugging Face model directory: no config.json")
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ModelSourceError(f"{str(config_path)!r} is not valid JSON: {exc}") from None
        self.hparams = LlamaHParams.from_config(config, str(self.directory))
        self.weight_files = sorted(self.directory.glob("*.safetensors"))
        if not self.weight_files:
            raise ModelSourceError(f"{str(self.directory)!r} holds no *.safetensors weights")
        self._tokenizer = tokenizer_metadata(self.directory, self.hparams.vocab)  # fails early without one
        self._model: LlmModel | None = None

    def load(self) -> LlmModel:
        if self._model is not None:
            return self._model
        hp, expected = self.hparams, self.hparams.expected_shapes()
        tensors: dict[str, np.ndarray] = {}
        for path in self.weight_files:
            for hf_name, array in read_safetensors(path).items():
                name = gguf_name(hf_name)
                if name is None or (name == "output.weight" and hp.tied):
                    continue
                if name not in expected or tuple(array.shape) != expected[name]:
                    want = expected.get(name, "no such tensor for this config")
                    raise ModelSourceError(
                        f"tensor {hf_name!r} in {path.name} has shape {list(array.shape)}; config.json implies {want}"
                    )
                if name.endswith("attn_q.weight"):
                    array = permute_qk(array, hp.heads)
                elif name.endswith("attn_k.weight"):
                    array = permute_qk(array, hp.kv_heads)
                tensors[name] = np.ascontiguousarray(array, dtype=np.float32)
        missing = sorted(set(expected) - set(tensors))
        if missing:
            raise ModelSourceError(f"{str(self.directory)!r} lacks tensors {missing[:5]} ({len(missing)} in all)")
        ordered = {name: tensors[name] for name in expected}
        self._model = LlmModel("llama", {**self.hparams.metadata(self.describe()), **self._tokenizer}, ordered)
        return self._model

    def digest(self) -> str:
        h = hashlib.sha256()
        for path in [self.directory / "config.json", *self.weight_files]:
            h.update(path.name.encode() + sha256_file(path).encode())
        return "sha256:" + h.hexdigest()

    def describe(self) -> str:
        return self.directory.name
