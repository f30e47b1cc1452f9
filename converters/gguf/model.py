"""The in-memory form every GGUF source produces: metadata key/values and float32 tensors in GGUF naming."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge_sdk.errors import ModelSourceError, choices

SUPPORTED_ARCHITECTURES = ("llama", "smollm3", "qwen2", "qwen3", "gemma2", "gemma3", "phi3")
# Keys the writer always sets itself; a source's copies of them are dropped.
WRITER_KEYS = ("general.architecture", "general.file_type", "general.quantization_version")


@dataclass(frozen=True)
class KeyValue:
    value: Any
    vtype: Any  # gguf.GGUFValueType
    sub_type: Any = None  # element type of an array


@dataclass
class LlmModel:
    """A LLaMA-family model ready to be written: `tensors` are float32, named and laid out as GGUF wants."""

    arch: str
    metadata: dict[str, KeyValue]
    tensors: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.arch not in SUPPORTED_ARCHITECTURES:
            raise ModelSourceError(
                f"architecture {self.arch!r} is not supported by the GGUF converter; "
                f"supported: {choices(SUPPORTED_ARCHITECTURES)}"
            )

    def get(self, key: str, default: Any = None) -> Any:
        kv = self.metadata.get(key)
        return default if kv is None else kv.value

    @property
    def chat_template(self) -> str | None:
        value = self.get("tokenizer.chat_template")
        return str(value) if value is not None else None

    @property
    def parameter_count(self) -> int:
        return sum(int(t.size) for t in self.tensors.values())
