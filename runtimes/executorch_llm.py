"""ExecuTorch language models: a .pte exported by ExecuTorch's LLM path (static KV cache, custom SDPA, XNNPACK)
stepped through the shared token loop: `forward([tokens], [start position])` gives the logits after the last
token and writes the cache in place, so starting again at position 0 is a fresh conversation.

The device needs `executorch` (its Python runtime imports torch) or, in an app, ExecuTorch's own runner."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edge_sdk.bundle import Variant
from edge_sdk.errors import InputError, RuntimeFailure
from runtimes.base import Session, SessionOptions, single_file
from runtimes.executorch_adapter import (
    ExecuTorchRuntime,
    _EtRuntime,
    _native_stderr_silenced,
    _set_threads,
    quiet_engine,
)
from runtimes.token_loop import LLM_CONFIG_FILE, TokenLoopSession


def is_llm_variant(variant: Variant) -> bool:
    return any(Path(f.path).name == LLM_CONFIG_FILE for f in variant.files)


class ExecuTorchLlmRuntime(ExecuTorchRuntime):
    """The ExecuTorch runtime the registry hands out: tensor programs as before, language models (a variant
    carrying llm_config.json) through the shared token loop."""

    def _load(self, variant: Variant, root: Path, options: SessionOptions) -> Session:
        if is_llm_variant(variant):
            return ExecuTorchLlmSession(single_file(variant, root, ".pte"), options)
        return super()._load(variant, root, options)


class ExecuTorchLlmSession(TokenLoopSession):
    engine_name = "executorch"

    def __init__(self, program_path: Path, options: SessionOptions) -> None:
        with quiet_engine():
            # The .pte calls llama::update_cache / custom_sdpa: their kernels register on this import.
            import executorch.extension.llm.custom_ops.custom_ops  # noqa: F401
        if options.threads:
            _set_threads(options.threads)
        try:
            with _native_stderr_silenced():
                self._program: Any = _EtRuntime.get().load_program(program_path)
                self._forward: Any = self._program.load_method("forward")
                context = self._constant("get_max_context_len")
                self._chunk = self._constant("get_max_seq_len")  # most tokens one forward call takes
        except Exception as exc:  # the runtime raises bare RuntimeError/ValueError for a bad program
            raise RuntimeFailure(f"ExecuTorch could not load {program_path.name!r}: {exc}") from exc
        super().__init__(program_path.parent, options, context)
        self._pos = 0

    def _constant(self, name: str) -> int:
        return int(self._program.load_method(name).execute([])[0])

    def _feed(self, tokens: list[int]) -> np.ndarray:
        logits: Any = None
        for at in range(0, len(tokens), self._chunk):
            part = tokens[at : at + self._chunk]
            try:
                out = self._forward.execute([torch.tensor([part], dtype=torch.long), torch.tensor([self._pos])])
            except Exception as exc:
                raise RuntimeFailure(f"ExecuTorch failed while running: {exc}") from exc
            self._pos += len(part)
            logits = out[0]
        return logits.reshape(-1, logits.shape[-1])[-1].numpy().astype(np.float32)

    def _start(self, tokens: list[int]) -> np.ndarray:
        self._pos = 0
        return self._feed(tokens)

    def _next(self, token: int) -> np.ndarray:
        return self._feed([token])

    def score(self, tokens: np.ndarray) -> np.ndarray:
        """Logits at every position (row i predicts token i + 1): one token a step, as decoding feeds them
        (the program returns only the last position's logits)."""
        ids = [int(t) for t in np.asarray(tokens).reshape(-1)]
        if not 0 < len(ids) <= self.context:
            raise InputError(f"score needs 1 to {self.context} tokens, got {len(ids)}")
        self._pos = 0
        return np.stack([self._feed([t]) for t in ids])

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._forward = None
            self._program = None
