"""One token loop for language-model engines that hand back logits (ExecuTorch, ONNX Runtime GenAI): the
tokenizer, the chat template, sampling, stop strings and statistics live here, so every such engine behaves the
same for the same request; an engine supplies only `_start` (a prompt in a fresh cache) and `_next` (one token).

Sampling is numpy's: temperature 0 is greedy; otherwise top-k, then top-p, over the logits divided by the
temperature, drawn from a generator seeded by `seed` (the same seed gives the same text on the same engine).
"""

from __future__ import annotations

import json
import time
from abc import abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from edge_sdk.errors import BundleError, ConfigError, ContextLengthError, InputError, UnsupportedOperationError
from runtimes.base import Piece, Session, SessionOptions, check_sampling
from runtimes.llama_cpp_stream import _first_stop, _held_back

LLM_CONFIG_FILE = "llm_config.json"  # what the loop needs besides the tokenizer: special tokens, context
GENERATE_OPTIONS = ("max_tokens", "temperature", "top_p", "top_k", "seed", "stop")


@dataclass(frozen=True)
class LlmConfig:
    """A language-model variant's own small manifest (written by its exporter, read by apps too)."""

    bos_token_id: int | None
    eos_token_ids: tuple[int, ...]
    add_bos: bool
    context_length: int
    vocab_size: int
    # The KV cache's shape, for `fit` (device_profiles.estimate reads this file without the runtime).
    layers: int = 0
    kv_heads: int = 0
    head_dim: int = 0
    trained_context: int = 0
    kv_bytes_per_value: int = 4  # both engines keep a float32 cache on CPU

    @classmethod
    def read(cls, directory: Path) -> LlmConfig:
        path = directory / LLM_CONFIG_FILE
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            return cls(
                raw.get("bos_token_id"), tuple(int(t) for t in raw["eos_token_ids"]), bool(raw["add_bos"]),
                int(raw["context_length"]), int(raw["vocab_size"]),
            )  # fmt: skip
        except (OSError, KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"{path} is missing or not a language-model config: {exc}") from None

    def write(self, directory: Path) -> Path:
        path = directory / LLM_CONFIG_FILE
        raw = {"bos_token_id": self.bos_token_id, "eos_token_ids": list(self.eos_token_ids), "add_bos": self.add_bos,
               "context_length": self.context_length, "vocab_size": self.vocab_size, "layers": self.layers,
               "kv_heads": self.kv_heads, "head_dim": self.head_dim, "trained_context": self.trained_context,
               "kv_bytes_per_value": self.kv_bytes_per_value}  # fmt: skip
        path.write_text(json.dumps(raw, indent=2) + "\n", encoding="utf-8")
        return path


@dataclass(frozen=True)
class LoopStats:
    prompt_tokens: int
    generated_tokens: int
    time_to_first_token_s: float
    total_s: float
    finish_reason: str = "stop"

    @property
    def tokens_per_second(self) -> float:
        decode_time = self.total_s - self.time_to_first_token_s
        return (self.generated_tokens - 1) / decode_time if self.generated_tokens > 1 and decode_time > 0 else 0.0


def chat_template_in(directory: Path) -> str | None:
    """The chat template saved beside a tokenizer: chat_template.jinja (transformers 5) or tokenizer_config.json."""
    beside = directory / "chat_template.jinja"
    if beside.is_file():
        return beside.read_text(encoding="utf-8")
    config = directory / "tokenizer_config.json"
    if config.is_file():
        template = json.loads(config.read_text(encoding="utf-8")).get("chat_template")
        return template if isinstance(template, str) else None
    return None


def sample(logits: np.ndarray, rng: np.random.Generator, temperature: float, top_k: int, top_p: float) -> int:
    if temperature == 0:
        return int(np.argmax(logits))
    scores = logits.astype(np.float64) / temperature
    if 0 < top_k < scores.size:
        cut = np.partition(scores, -top_k)[-top_k]
        scores = np.where(scores >= cut, scores, -np.inf)
    probs = np.exp(scores - scores.max())
    probs /= probs.sum()
    if top_p < 1.0:
        order = np.argsort(-probs)
        keep = np.cumsum(probs[order]) - probs[order] < max(top_p, 1e-12)  # always keeps the most likely
        mask = np.zeros_like(probs, dtype=bool)
        mask[order[keep]] = True
        probs = np.where(mask, probs, 0.0)
        probs /= probs.sum()
    return int(rng.choice(probs.size, p=probs))


class TokenLoopSession(Session):
    """A language model whose engine gives logits; subclasses implement `_start`, `_next` and `score`."""

    inputs = ()
    outputs = ()
    engine_name: ClassVar[str] = "engine"
    supports_grammar: ClassVar[bool] = False  # no constrained decoding: response_format / tools are refused
    supports_logprobs: ClassVar[bool] = False

    def __init__(self, directory: Path, options: SessionOptions, model_context: int) -> None:
        from tokenizers import Tokenizer

        self.directory = directory
        self.config = LlmConfig.read(directory)
        tokenizer_path = directory / "tokenizer.json"
        if not tokenizer_path.is_file():
            raise BundleError(f"{directory} holds no tokenizer.json; the variant cannot take text")
        self._tokenizer = Tokenizer.from_file(str(tokenizer_path))
        self._chat_template = options.chat_template or chat_template_in(directory)
        self.context: int = min(options.context or model_context, model_context)  # the KV cache's tokens
        self.context_length = self.context
        self.last_stats: LoopStats | None = None

    # -- what an engine implements
    @abstractmethod
    def _start(self, tokens: list[int]) -> np.ndarray:
        """Feed `tokens` into a fresh cache; the logits after the last one [vocab]."""

    @abstractmethod
    def _next(self, token: int) -> np.ndarray:
        """Feed one more token; the logits after it [vocab]."""

    # -- the shared loop
    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise UnsupportedOperationError(
            f"{self.directory.name} is a language model: use generate(prompt) or chat(messages), not run()"
        )

    def run(self, inputs: Mapping[str, np.ndarray], *, check: bool = True) -> dict[str, np.ndarray]:
        return self._run(dict(inputs))

    def tokenize(self, text: str, *, add_bos: bool) -> list[int]:
        ids = list(self._tokenizer.encode(text, add_special_tokens=False).ids)
        bos = self.config.bos_token_id
        return [bos, *ids] if add_bos and bos is not None and (not ids or ids[0] != bos) else ids

    def detokenize(self, tokens: Sequence[int]) -> str:
        return str(self._tokenizer.decode(list(tokens), skip_special_tokens=False))

    def render_chat(self, messages: Sequence[Mapping[str, str]]) -> str:
        from runtimes.llama_cpp_adapter import render_chat_template

        if not self._chat_template:
            raise UnsupportedOperationError(
                f"{self.directory.name} carries no chat template; use generate(prompt), or give one (--chat-template)"
            )
        for i, m in enumerate(messages):
            if not isinstance(m, Mapping) or "role" not in m or "content" not in m:
                raise InputError(f"message {i} must be a mapping with 'role' and 'content'; got {m!r}")
        bos = self.config.bos_token_id
        eos = self.config.eos_token_ids[0] if self.config.eos_token_ids else None
        return render_chat_template(
            self._chat_template, messages, bos_token=self._special(bos), eos_token=self._special(eos)
        )

    def count_prompt_tokens(self, prompt: str | None = None, messages: Sequence[Mapping[str, str]] = ()) -> int:
        if prompt is not None:
            return len(self.tokenize(prompt, add_bos=self.config.add_bos))
        return len(self.tokenize(self.render_chat(messages), add_bos=False))

    def generate(self, prompt: str, **options: Any) -> Iterator[str]:
        return self._stream(self.tokenize(prompt, add_bos=self.config.add_bos), options)

    def chat(self, messages: Sequence[Mapping[str, str]], **options: Any) -> Iterator[str]:
        return self._stream(self.tokenize(self.render_chat(messages), add_bos=False), options)

    def _stream(self, tokens: list[int], options: Mapping[str, Any]) -> Iterator[str]:
        unknown = sorted(set(options) - set(GENERATE_OPTIONS))
        if unknown:
            raise ConfigError(
                f"generation options {unknown} are not supported by the {self.engine_name} engine; "
                f"it takes: {list(GENERATE_OPTIONS)}"
            )
        max_tokens = int(options.get("max_tokens", 256))
        temperature = float(options.get("temperature", 0.8))
        top_p, top_k = float(options.get("top_p", 0.95)), int(options.get("top_k", 40))
        check_sampling(max_tokens, temperature, top_p, top_k)
        if not tokens:
            raise InputError("the prompt is empty; give at least one character")
        if len(tokens) + max_tokens > self.context:
            raise ContextLengthError(
                f"prompt of {len(tokens)} tokens + max_tokens {max_tokens} exceeds the context of "
                f"{self.context} ({self.engine_name} holds a KV cache of that size)"
            )
        stop = options.get("stop")
        stops = [s for s in ([stop] if isinstance(stop, str) else list(stop or [])) if s]
        rng = np.random.default_rng(options.get("seed"))
        return self._pieces(tokens, max_tokens, (temperature, top_k, top_p), stops, rng)

    def _pieces(
        self, prompt: list[int], max_tokens: int, sampling: tuple[float, int, float], stops: list[str],
        rng: np.random.Generator,
    ) -> Iterator[str]:  # fmt: skip
        start, first = time.perf_counter(), None
        done: list[int] = []
        shown_chars, finish = 0, "length"
        logits = self._start(prompt)
        try:
            while True:
                token = sample(logits, rng, *sampling)
                if token in self.config.eos_token_ids:
                    finish = "stop"
                    break
                done.append(token)
                text = self.detokenize(done)
                cut = _first_stop(text[shown_chars:], stops)
                if cut is not None:
                    finish = "stop"
                    if cut:
                        first = first if first is not None else time.perf_counter() - start
                        yield Piece(text[shown_chars : shown_chars + cut])
                    break
                if len(done) >= max_tokens:
                    if len(text) > shown_chars:
                        first = first if first is not None else time.perf_counter() - start
                        yield Piece(text[shown_chars:])
                    break
                pending = text[shown_chars:]
                ready = len(pending) - _held_back(pending, stops)
                if ready > 0 and not pending.endswith("\ufffd"):  # a character split across tokens waits
                    first = first if first is not None else time.perf_counter() - start
                    yield Piece(pending[:ready])
                    shown_chars += ready
                logits = self._next(token)
        finally:
            total = time.perf_counter() - start
            self.last_stats = LoopStats(len(prompt), len(done), first if first is not None else total, total, finish)

    def _special(self, token: int | None) -> str:
        return "" if token is None else str(self._tokenizer.id_to_token(token) or "")
