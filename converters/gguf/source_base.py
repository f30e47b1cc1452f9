"""What an LLM source is: a ModelSource whose model is a LLaMA-family network plus its tokenizer."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping

import numpy as np

from converters.gguf.model import LlmModel
from converters.sources import ModelSource
from edge_sdk.errors import UnsupportedOperationError
from edge_sdk.types import TensorSpec


class LlmSource(ModelSource):
    """LLM sources have no tensor inputs: their variants are measured on text (converters.gguf.logits_verifier)."""

    example_inputs: dict[str, np.ndarray] = {}  # noqa: RUF012 - shared empty mapping, never mutated

    @abstractmethod
    def load(self) -> LlmModel:
        """The model as float32 tensors in GGUF naming, with its GGUF metadata (tokenizer included)."""

    def reference(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise UnsupportedOperationError(
            f"{self.describe()} is a language model: it is measured on text by convert_llm, not on tensors"
        )

    def input_specs(self) -> tuple[TensorSpec, ...]:
        return ()
