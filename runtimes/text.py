"""Text in, for tensor bundles that carry a tokenizer: a Session around the engine's own that tokenizes with the
`tokenizers` package (no torch, no transformers), so a device embeds or classifies text with any engine.

`run` still takes raw tensors; `embed(texts)` gives one vector a text, `classify(texts)` the class scores.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_sdk.bundle import Bundle
from edge_sdk.errors import BackendUnavailableError, InputError, UnsupportedOperationError
from edge_sdk.types import Task
from runtimes.base import Session

BATCH = 32  # texts per engine call: bounds the padded batch a long request builds


@dataclass(frozen=True)
class Classification:
    label: str
    score: float  # softmax probability of `label`
    scores: dict[str, float]


class TextSession(Session):
    def __init__(self, inner: Session, tokenizer_json: Path, *, max_length: int, task: Task, labels: Sequence[str]):
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise BackendUnavailableError(
                "this bundle takes text; its tokenizer needs the tokenizers package: pip install 'edge-sdk[text]'"
            ) from None
        self.inner = inner
        self.inputs, self.outputs, self.stats = inner.inputs, inner.outputs, inner.stats
        self.variant_id = inner.variant_id
        self.thread_safe = inner.thread_safe  # type: ignore[misc]  # follows the engine's own answer
        self.task, self.labels, self.max_length = task, tuple(labels), max_length
        self._tokenizer = Tokenizer.from_file(str(tokenizer_json))
        self._tokenizer.enable_truncation(max_length)
        pad = next((t for t in ("[PAD]", "<pad>") if self._tokenizer.token_to_id(t) is not None), None)
        self._tokenizer.enable_padding(pad_id=self._tokenizer.token_to_id(pad) if pad else 0, pad_token=pad or "[PAD]")
        names = {s.name for s in inner.inputs}
        if not {"input_ids", "attention_mask"} <= names:
            raise InputError(
                f"a text bundle's model takes input_ids and attention_mask; this one takes {sorted(names)}"
            )

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.inner.run(inputs)

    def tokenize(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Token ids and attention mask, padded to the longest text (at most `max_length` tokens)."""
        if not texts or not all(isinstance(t, str) for t in texts):
            raise InputError("give at least one text, each a string")
        encodings = self._tokenizer.encode_batch(list(texts))
        return {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        }

    def count_tokens(self, texts: Sequence[str]) -> int:
        return int(self.tokenize(texts)["attention_mask"].sum())

    def count_prompt_tokens(self, prompt: str | None = None, messages: Sequence[Mapping[str, str]] = ()) -> int:
        """Tokens the model reads for `prompt` (the daemon's embeddings usage and context checks)."""
        if messages:
            raise UnsupportedOperationError("a text encoder takes texts, not chat messages")
        return self.count_tokens([prompt or ""])

    def _outputs(self, texts: Sequence[str]) -> np.ndarray:
        first = self.outputs[0].name
        parts = [self.run(self.tokenize(texts[i : i + BATCH]))[first] for i in range(0, len(texts), BATCH)]
        return np.concatenate(parts)

    def embed(self, texts: list[str]) -> np.ndarray:
        if self.task is not Task.EMBEDDING:
            raise UnsupportedOperationError(f"this model is a {self.task.value} model, not an embedding model")
        return np.asarray(self._outputs(texts), dtype=np.float32)

    def classify(self, texts: list[str]) -> list[Classification]:
        if self.task is not Task.CLASSIFICATION:
            raise UnsupportedOperationError(f"this model is a {self.task.value} model, not a text classifier")
        logits = self._outputs(texts).astype(np.float64)
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        names = self.labels or tuple(f"LABEL_{i}" for i in range(probs.shape[1]))
        return [
            Classification(names[int(p.argmax())], float(p.max()), {n: float(v) for n, v in zip(names, p, strict=True)})
            for p in probs
        ]

    def close(self) -> None:
        self.inner.close()


def with_preprocessing(session: Session, bundle: Bundle) -> Session:
    """The session itself, or a TextSession when the bundle carries a tokenizer."""
    pre = bundle.manifest.preprocessing
    if pre is None or pre.kind != "text":
        return session
    return TextSession(
        session,
        bundle.path_of(pre.tokenizer),
        max_length=pre.max_length,
        task=bundle.manifest.task,
        labels=bundle.manifest.labels,
    )
