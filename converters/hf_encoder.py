"""Hugging Face text encoders (BERT, RoBERTa, DistilBERT, ...): a directory of config.json + safetensors +
tokenizer.json becomes a torch source whose inputs are token ids and an attention mask, batch and sequence
length both dynamic (the sequence bounded by the model's position table).

The task comes from the config: `*ForSequenceClassification` -> classification (logits, labels from id2label);
anything else -> sentence embedding, pooled as the sentence-transformers config says (modules.json,
1_Pooling/config.json) or by the mean over real tokens when there is none.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from converters.sources import PreprocessingFiles, TorchSource
from edge_sdk.errors import ModelSourceError
from edge_sdk.types import Task

SEQUENCE = "sequence"
EXAMPLE_LENGTH = 16  # tokens per example sentence: some are padded, some truncated, so both paths are measured
POOLINGS = ("mean", "cls", "max")
# Example and evaluation text: varied lengths and words, so padding, truncation and unknown pieces all occur.
TEXTS = (
    "The quick brown fox jumps over the lazy dog.",
    "A board on the desk runs the model all day.",
    "Is it raining in the city tonight?",
    "Small devices need small models.",
    "The cat sat on the mat.",
    "Hello world!",
    "Batteries last longer when the processor sleeps.",
    "What time does the train to the airport leave?",
    "Edge inference keeps private data on the device.",
    "She read the book in one evening and wrote a long review of it.",
    "Temperature sensors report every ten seconds.",
    "Quantization trades a little accuracy for speed.",
    "Where is the nearest pharmacy?",
    "The meeting was moved to Thursday afternoon.",
    "An apple a day keeps the doctor away.",
    "Download finished.",
    "The robot arm picked up the red block and placed it on the blue one.",
    "Please turn off the lights in the kitchen.",
    "Translation models run well on phones now.",
    "It was the best of times, it was the worst of times.",
    "Sales grew by twelve percent this quarter.",
    "The camera detected motion near the front door.",
    "Can you recommend a good restaurant nearby?",
    "Water boils at one hundred degrees.",
    "The update installs itself overnight.",
    "Our team won the match on Sunday.",
    "Reset the router and try again.",
    "Music fills the quiet house.",
    "A long sentence with many words tests what happens when the tokenizer has to cut the input short.",
    "Yes.",
    "The library opens at nine in the morning.",
    "Fresh bread smells wonderful.",
)


@dataclass
class HfEncoderSource(TorchSource):
    """A Hugging Face encoder wrapped to take (input_ids, attention_mask) and give one vector or logits a text."""

    directory: Path = field(default_factory=Path)
    task: Task = Task.EMBEDDING
    labels: tuple[str, ...] = ()
    pooling: str | None = None
    normalize: bool = False
    max_length: int = 512
    tokenizer_files: dict[str, Path] = field(default_factory=dict)
    kind: str = field(default="huggingface", init=False)

    def preprocessing(self) -> PreprocessingFiles:
        return PreprocessingFiles("text", self.tokenizer_files, self.max_length, self.pooling)


def hf_config(path: Path) -> Any:
    """The directory's transformers config, or a one-line error naming what is wrong."""
    try:
        from transformers import AutoConfig
    except ImportError:
        from edge_sdk.errors import BackendUnavailableError

        raise BackendUnavailableError(
            "reading a Hugging Face model needs transformers: pip install 'edge-sdk[convert,llm]'"
        ) from None
    try:
        return AutoConfig.from_pretrained(str(path))
    except (ValueError, KeyError, OSError) as exc:
        model_type = _read_json(path / "config.json").get("model_type")
        if model_type:
            raise ModelSourceError(
                f"{str(path)!r}: transformers does not know the architecture {model_type!r} "
                "(config.json model_type); give a model transformers can load, or an .onnx export of it"
            ) from None
        raise ModelSourceError(f"{str(path)!r} is not a Hugging Face model directory: {_first_line(exc)}") from None


def load_hf_encoder(path: Path, config: Any | None = None) -> HfEncoderSource:
    """Load an encoder directory with transformers and wrap it for export; refuse what is not one."""
    config = config if config is not None else hf_config(path)
    tokenizer_json = path / "tokenizer.json"
    if not tokenizer_json.is_file():
        raise ModelSourceError(
            f"{str(path)!r} has no tokenizer.json: the bundle must carry the tokenizer so the device can take text "
            "(save it with tokenizer.save_pretrained(dir), a fast tokenizer)"
        )
    classify = any(n.endswith("ForSequenceClassification") for n in (getattr(config, "architectures", None) or []))
    try:
        from transformers import AutoModel, AutoModelForSequenceClassification

        loader = AutoModelForSequenceClassification if classify else AutoModel
        with _transformers_quiet():  # its load report and progress bars are not the user's business
            # eager attention: the exporters trace plain tensor ops, not a fused kernel chosen at run time
            model = loader.from_pretrained(str(path), attn_implementation="eager")
    except Exception as exc:  # transformers raises ValueError, OSError, KeyError... for a broken directory
        raise ModelSourceError(f"transformers could not load {str(path)!r}: {_first_line(exc)}") from None
    model.eval()
    max_positions = int(getattr(config, "max_position_embeddings", 512))
    # RoBERTa's positions start after the padding index: its usable length is shorter than the table.
    offset = int(getattr(config, "pad_token_id", 0) or 0) + 1 if config.model_type in ("roberta", "xlm-roberta") else 0
    max_length = max_positions - offset
    pooling, normalize = (None, False) if classify else sentence_transformers_pooling(path)
    module: nn.Module = _Logits(model) if classify else _Pooled(model, pooling or "mean", normalize)
    labels: tuple[str, ...] = ()
    if classify:
        id2label = getattr(config, "id2label", None) or {}
        labels = tuple(str(id2label.get(i, f"LABEL_{i}")) for i in range(int(config.num_labels)))
    files = {"tokenizer.json": tokenizer_json}
    if (path / "tokenizer_config.json").is_file():
        files["tokenizer_config.json"] = path / "tokenizer_config.json"
    return HfEncoderSource(
        module=module,
        example_inputs=tokenize(tokenizer_json, TEXTS, EXAMPLE_LENGTH),
        output_names=("logits",) if classify else ("sentence_embedding",),
        description=str(path),
        dynamic_axes={1: (SEQUENCE, max_length)},
        directory=path,
        task=Task.CLASSIFICATION if classify else Task.EMBEDDING,
        labels=labels,
        pooling=None if classify else (pooling or "mean"),
        normalize=normalize,
        max_length=max_length,
        tokenizer_files=files,
    )


def tokenize(tokenizer_json: Path, texts: tuple[str, ...] | list[str], length: int) -> dict[str, np.ndarray]:
    """Token ids and attention mask, padded or truncated to `length`, as the device's tokenizer will make them."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    pad_id = tok.token_to_id("[PAD]") if tok.token_to_id("[PAD]") is not None else tok.token_to_id("<pad>")
    tok.enable_truncation(length)
    tok.enable_padding(length=length, pad_id=pad_id or 0)
    encodings = tok.encode_batch(list(texts))
    return {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
    }


def sentence_transformers_pooling(path: Path) -> tuple[str | None, bool]:
    """(pooling, normalize) from a sentence-transformers layout, or (None, False) when the directory has none."""
    modules = _read_json(path / "modules.json")
    if not isinstance(modules, list):
        return None, False
    pooling, normalize = None, False
    for module in modules:
        kind = str(module.get("type", ""))
        if kind.endswith("Pooling"):
            cfg = _read_json(path / str(module.get("path", "1_Pooling")) / "config.json")
            chosen = [
                p for p in POOLINGS if cfg.get(f"pooling_mode_{p}_token" if p == "cls" else f"pooling_mode_{p}_tokens")
            ]
            if not chosen:
                raise ModelSourceError(
                    f"{str(path)!r}: the sentence-transformers pooling {cfg} is not one edge-sdk exports; "
                    f"valid: {', '.join(POOLINGS)}"
                )
            pooling = chosen[0]
        elif kind.endswith("Normalize"):
            normalize = True
    return pooling, normalize


@contextlib.contextmanager
def _transformers_quiet() -> Iterator[None]:
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


class _Pooled(nn.Module):
    """Token states -> one vector a text, over real tokens only (padding must not move the result)."""

    def __init__(self, encoder: nn.Module, pooling: str, normalize: bool) -> None:
        super().__init__()
        self.encoder, self.pooling, self.normalize = encoder, pooling, normalize

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        elif self.pooling == "max":
            pooled = (hidden + (mask - 1.0) * 1e9).max(dim=1).values
        else:
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return nn.functional.normalize(pooled, dim=-1) if self.normalize else pooled


class _Logits(nn.Module):
    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.classifier(input_ids=input_ids, attention_mask=attention_mask).logits
