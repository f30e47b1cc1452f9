"""A Hugging Face-format decoder directory (config.json, *.safetensors, a tokenizer) as a GGUF source.

The families are those of `converters.gguf.families`; tensor names come from gguf-py's `TensorNameMap`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from converters.gguf.families import (
    Dims,
    expected_shapes,
    family_of,
    hparam_metadata,
    llama3_rope_factors,
    phi3_rope_factors,
    rope_parameters,
    transform,
)
from converters.gguf.model import KeyValue, LlmModel
from converters.gguf.safetensors_io import read_safetensors
from converters.gguf.source_base import LlmSource
from converters.gguf.tokenizer import tokenizer_metadata
from edge_sdk.bundle.files import sha256_file
from edge_sdk.errors import ModelSourceError


def _tokenizer_rows(directory: Path, vocab: int) -> int:
    """How many tokens the tokenizer really has (Gemma 3 drops embedding rows beyond them)."""
    path = directory / "tokenizer.json"
    if not path.is_file():
        return vocab
    tok = json.loads(path.read_text(encoding="utf-8"))
    return min(vocab, len(tok["model"]["vocab"]) + len(tok.get("added_tokens", [])))  # the reference's count


@dataclass
class HfSource(LlmSource):
    """A decoder checkpoint directory, as written by transformers' save_pretrained."""

    directory: Path
    kind: str = field(default="hf", init=False)

    def __post_init__(self) -> None:
        self.directory = Path(self.directory)
        config_path = self.directory / "config.json"
        if not config_path.is_file():
            raise ModelSourceError(f"{str(self.directory)!r} is not a Hugging Face model directory: no config.json")
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ModelSourceError(f"{str(config_path)!r} is not valid JSON: {exc}") from None
        where = str(self.directory)
        self.config = {**config, **config.get("text_config", {})}
        self.hf_arch, self.family = family_of(self.config, where)
        self.kind = f"hf-{self.family.arch}"
        self.dims = Dims.of(self.config, where)
        self.tied = bool(self.config.get("tie_word_embeddings", self.family.drop_lm_head))
        cut = self.family.cut_embedding
        self.vocab_rows = _tokenizer_rows(self.directory, self.dims.vocab) if cut else self.dims.vocab
        self._metadata = hparam_metadata(self.family, self.config, self.dims, self.describe())  # refuses bad rope
        self.weight_files = sorted(self.directory.glob("*.safetensors"))
        if not self.weight_files:
            raise ModelSourceError(f"{str(self.directory)!r} holds no *.safetensors weights")
        self._tokenizer = tokenizer_metadata(self.directory, self.dims.vocab)  # fails early without one
        self._check_phi3_name()
        self._model: LlmModel | None = None

    def load(self) -> LlmModel:
        if self._model is not None:
            return self._model
        import gguf

        family, dims = self.family, self.dims
        names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[family.arch.upper()], dims.layers)
        expected = expected_shapes(family, dims, tied=self.tied, vocab_rows=self.vocab_rows)
        tensors: dict[str, np.ndarray] = {}
        for path in self.weight_files:
            for hf_name, array in read_safetensors(path).items():
                if hf_name.endswith(("rotary_emb.inv_freq", "masked_bias")):
                    continue
                name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
                if name in ("output.weight",) and (self.tied or family.drop_lm_head):
                    continue
                if name == "token_embd.weight" and family.cut_embedding:
                    array = array[: self.vocab_rows]
                if name is None or name not in expected:
                    raise ModelSourceError(
                        f"tensor {hf_name!r} in {path.name} is not part of a {self.hf_arch} with this config.json"
                    )
                if tuple(array.shape) != expected[name]:
                    raise ModelSourceError(
                        f"tensor {hf_name!r} in {path.name} has shape {list(array.shape)}; config.json implies "
                        f"{list(expected[name])}"
                    )
                tensors[name] = np.ascontiguousarray(transform(family, dims, name, array), dtype=np.float32)
        missing = sorted(set(expected) - set(tensors))
        if missing:
            raise ModelSourceError(f"{str(self.directory)!r} lacks tensors {missing[:5]} ({len(missing)} in all)")
        ordered = {name: tensors[name] for name in expected}
        factors = llama3_rope_factors(rope_parameters(self.config), dims)
        if factors is not None:
            ordered = {"rope_freqs.weight": factors, **ordered}
        if family.arch == "phi3":  # the reference writes its extra tensors first
            ordered = {**phi3_rope_factors(self.config, dims), **ordered}
        model = LlmModel(family.arch, {**self._metadata, **self._tokenizer, **self._quirks()}, ordered)
        self._model = self.with_chat_template(model)
        return self._model

    def _quirks(self) -> dict[str, KeyValue]:
        """Keys llama.cpp's converter adds for one family (kept so llama.cpp sees the same model from both)."""
        import gguf

        if self.family.arch in ("llama", "smollm3") and self.dims.vocab == 49152:  # its rule for Granite vocabularies
            return {"tokenizer.ggml.add_bos_token": KeyValue(False, gguf.GGUFValueType.BOOL)}
        if self.family.arch == "gemma2" and (self.directory / "tokenizer.model").is_file():
            return {"tokenizer.ggml.add_space_prefix": KeyValue(False, gguf.GGUFValueType.BOOL)}
        return {}

    def _check_phi3_name(self) -> None:
        """llama.cpp looks up Phi-3's special tokens in any model whose name says phi3: absent, it cannot load."""
        name = self.describe().lower()
        if "phi3" not in name and "phi-3" not in name:
            return
        vocab = set(self._tokenizer["tokenizer.ggml.tokens"].value)
        missing = [t for t in ("</s>", "<unk>", "<s>", "<|endoftext|>") if t not in vocab]
        if missing:
            raise ModelSourceError(
                f"llama.cpp treats a model named {self.describe()!r} as Phi-3 and needs the tokens {missing} its "
                "tokenizer lacks: it would fail to load. Rename the directory (the name goes into general.name)"
            )

    def digest(self) -> str:
        h = hashlib.sha256()
        for path in [self.directory / "config.json", *self.weight_files]:
            h.update(path.name.encode() + sha256_file(path).encode())
        return "sha256:" + h.hexdigest()

    def describe(self) -> str:
        return self.directory.name


HfLlamaSource = HfSource  # the name before other families joined
