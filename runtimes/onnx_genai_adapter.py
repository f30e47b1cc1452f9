"""ONNX Runtime GenAI: a language-model variant built by onnxruntime-genai's model builder (genai_config.json,
model.onnx with a KV cache, tokenizer.json), run with `onnxruntime_genai` through the shared token loop.

The device needs `onnxruntime-genai` (it pulls `onnxruntime`), no torch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from edge_sdk.bundle import Variant
from edge_sdk.errors import BackendUnavailableError, InputError, RuntimeFailure
from runtimes.base import SessionOptions
from runtimes.token_loop import TokenLoopSession

GENAI_CONFIG = "genai_config.json"


def is_genai_variant(variant: Variant) -> bool:
    return any(Path(f.path).name == GENAI_CONFIG for f in variant.files)


def import_genai() -> Any:
    try:
        import onnxruntime_genai as og
    except ModuleNotFoundError as exc:
        raise BackendUnavailableError(
            f"ONNX Runtime GenAI variants need {exc.name!r}: pip install 'edge-sdk[onnx-genai]'"
        ) from exc
    return og


class OnnxGenaiSession(TokenLoopSession):
    engine_name = "onnxruntime-genai"

    def __init__(self, directory: Path, options: SessionOptions) -> None:
        og = import_genai()
        raw = json.loads((directory / GENAI_CONFIG).read_text(encoding="utf-8"))
        try:
            config = og.Config(str(directory))
            if options.threads:  # the decoder's ORT session: as many threads as asked
                overlay = {"model": {"decoder": {"session_options": {"intra_op_num_threads": options.threads}}}}
                config.overlay(json.dumps(overlay))
            self._model: Any = og.Model(config)
        except Exception as exc:  # the engine raises its own untyped errors for a bad folder
            raise RuntimeFailure(f"ONNX Runtime GenAI could not load {directory.name!r}: {exc}") from exc
        super().__init__(directory, options, int(raw["model"]["context_length"]))
        self._generator: Any = None

    def _new_generator(self, length: int) -> Any:
        og = import_genai()
        params = og.GeneratorParams(self._model)
        params.set_search_options(do_sample=False, max_length=length)
        return og.Generator(self._model, params)

    def _start(self, tokens: list[int]) -> np.ndarray:
        self._generator = self._new_generator(self.context)
        self._generator.append_tokens(np.asarray([tokens], dtype=np.int32))
        return self._last_logits()

    def _next(self, token: int) -> np.ndarray:
        self._generator.append_tokens(np.asarray([[token]], dtype=np.int32))
        return self._last_logits()

    def _last_logits(self) -> np.ndarray:
        logits = np.asarray(self._generator.get_logits())
        return logits.reshape(-1, logits.shape[-1])[-1].astype(np.float32)

    def score(self, tokens: np.ndarray) -> np.ndarray:
        """Logits at every position (row i predicts token i + 1), the prompt fed as one batch."""
        ids = [int(t) for t in np.asarray(tokens).reshape(-1)]
        if not 0 < len(ids) <= self.context:
            raise InputError(f"score needs 1 to {self.context} tokens, got {len(ids)}")
        generator = self._new_generator(max(len(ids) + 1, 2))
        generator.append_tokens(np.asarray([ids], dtype=np.int32))
        logits = np.asarray(generator.get_output("logits"), dtype=np.float32)
        return logits.reshape(-1, logits.shape[-1])[-len(ids) :]

    def close(self) -> None:
        self._generator = None
        self._model = None
