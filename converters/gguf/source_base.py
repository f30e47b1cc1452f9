"""What an LLM source is: a ModelSource whose model is a LLaMA-family network plus its tokenizer."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from converters.gguf.model import KeyValue, LlmModel
from converters.sources import ModelSource
from edge_sdk.errors import UnsupportedOperationError
from edge_sdk.types import TensorSpec


class LlmSource(ModelSource):
    """LLM sources have no tensor inputs: their variants are measured on text (converters.gguf.logits_verifier)."""

    example_inputs: dict[str, np.ndarray] = {}  # noqa: RUF012 - shared empty mapping, never mutated
    chat_template: str | None = None  # given by the user: replaces the model's own (tokenizer.chat_template)

    def with_chat_template(self, model: LlmModel) -> LlmModel:
        """`model` with the user's chat template written into its metadata, when one was given."""
        if self.chat_template is not None:
            import gguf

            model.metadata["tokenizer.chat_template"] = KeyValue(self.chat_template, gguf.GGUFValueType.STRING)
        return model

    @abstractmethod
    def load(self) -> LlmModel:
        """The model as float32 tensors in GGUF naming, with its GGUF metadata (tokenizer included)."""

    def reference_file(self, workdir: Path) -> tuple[Path, str]:
        """The GGUF its variants are measured against, and what to call it: the model at float32, written into
        `workdir` (a source that cannot be loaded here, a GGUF re-quantized by llama.cpp, is its own reference)."""
        from converters.gguf.writer import write_gguf
        from edge_sdk.types import QuantScheme

        return write_gguf(self.load(), workdir / "reference-f32.gguf", QuantScheme.F32), "at float32"

    def requantize_warning(self) -> str | None:
        """What re-quantizing this source costs when it is already quantized (a GGUF), else None."""
        return None

    def reference(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise UnsupportedOperationError(
            f"{self.describe()} is a language model: it is measured on text by convert_llm, not on tensors"
        )

    def input_specs(self) -> tuple[TensorSpec, ...]:
        return ()
