"""llama.cpp adapter: runs the .gguf of a variant; streaming generation, chat templates in a sandbox, embeddings."""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
from jinja2.exceptions import SecurityError, TemplateError, TemplateRuntimeError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from device_profiles.estimate import DEFAULT_CONTEXT, ModelFacts  # one number: what a session gets and what fit budgets
from edge_sdk.bundle import Variant
from edge_sdk.errors import (
    BundleError,
    ConfigError,
    ContextLengthError,
    InputError,
    RuntimeFailure,
    UnsupportedOperationError,
)
from edge_sdk.types import Backend, QuantScheme
from runtimes.base import OutputConstraint, Runtime, Session, SessionOptions, check_sampling, single_file
from runtimes.llama_cpp_cache import PromptStates
from runtimes.llama_cpp_draft import make_drafter
from runtimes.llama_cpp_quiet import import_llama_cpp, quiet_stderr
from runtimes.llama_cpp_stream import MAX_TOP_LOGPROBS, Sampling, StreamEnd, stream_tokens

GENERATE_OPTIONS = (
    "max_tokens", "temperature", "top_p", "top_k", "seed", "stop", "presence_penalty", "frequency_penalty",
    "logit_bias", "logprobs", "constraint",
)  # fmt: skip
# The embeddings instance reads at most one batch of tokens a text (llama-cpp-python truncates to n_batch):
# a longer context would only hold KV cache it never fills.
EMBED_CONTEXT = 512
EMBED_SEQUENCES = 256  # llama-cpp-python's embeddings context: min(n_batch, llama.cpp's parallel limit)


@dataclass(frozen=True)
class GenerationStats:
    prompt_tokens: int
    generated_tokens: int
    time_to_first_token_s: float
    total_s: float
    finish_reason: str = "stop"  # "length" when max_tokens cut the answer
    cached_tokens: int = 0  # prompt tokens reused from earlier requests, not evaluated again
    drafted_tokens: int = 0  # tokens proposed by speculative drafting
    accepted_tokens: int = 0  # ...of which the model confirmed these

    @property
    def tokens_per_second(self) -> float:
        """Decode speed: tokens after the first over the time after the first."""
        decode_time = self.total_s - self.time_to_first_token_s
        return (self.generated_tokens - 1) / decode_time if self.generated_tokens > 1 and decode_time > 0 else 0.0


class _RefuseUnsafe(jinja2.Undefined):
    """Undefined that fails at once when the sandbox refused an attribute (jinja2 would print '' otherwise)."""

    def __init__(self, hint: str | None = None, obj: Any = jinja2.utils.missing, name: str | None = None,
                 exc: type[TemplateRuntimeError] = jinja2.UndefinedError) -> None:  # fmt: skip
        super().__init__(hint, obj, name, exc)
        if exc is SecurityError:
            raise SecurityError(hint or f"access to {name!r} is unsafe")


def _raise_exception(message: str) -> None:
    raise TemplateError(message)


CHAT_TEMPLATE_FILE = "chat_template.jinja"


def check_chat_template(template: str) -> str:
    """Refuse, before anything is written, a template that does not render a short conversation in the sandbox."""
    render_chat_template(template, [{"role": "user", "content": "Hello"}], bos_token="<s>", eos_token="</s>")
    return template


def render_chat_template(template: str, messages: Sequence[Mapping[str, str]], **variables: Any) -> str:
    """Render a model's chat template in jinja2's immutable sandbox; an escape attempt raises BundleError."""
    env = ImmutableSandboxedEnvironment(undefined=_RefuseUnsafe, trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise_exception
    try:
        return env.from_string(template).render(messages=list(messages), add_generation_prompt=True, **variables)
    except SecurityError as exc:
        raise BundleError(f"the model's chat template tried an operation the sandbox forbids: {exc}") from None
    except TemplateError as exc:
        raise BundleError(f"the model's chat template failed: {type(exc).__name__}: {exc}") from None


class LlamaSession(Session):
    """A GGUF model in llama.cpp. `last_stats` holds the measurements of the latest generate/chat call."""

    inputs = ()
    outputs = ()
    supports_grammar = True

    def __init__(
        self, model_path: Path, options: SessionOptions, n_ctx: int = DEFAULT_CONTEXT, facts: ModelFacts | None = None
    ) -> None:
        llama_cpp = import_llama_cpp()

        if options.prompt_cache_mb < 0:
            raise ConfigError(f"prompt_cache_mb must be >= 0 (0 turns prompt reuse off), got {options.prompt_cache_mb}")
        self._states = PromptStates(options.prompt_cache_mb * 2**20)
        self._drafter = make_drafter(options.speculative, options.draft_tokens)
        self._path, self._threads, self._n_ctx = model_path, options.threads, n_ctx
        self._facts = facts or ModelFacts.of_files(Backend.GGUF, QuantScheme.F32, [model_path])
        self.context_length = n_ctx
        try:
            with quiet_stderr():  # llama.cpp warns on stderr, verbose=False or not, e.g. when n_ctx > training
                self._llm: Any = llama_cpp.Llama(
                    model_path=str(model_path), n_ctx=n_ctx, n_threads=options.threads, verbose=False
                )
        except (ValueError, RuntimeError) as exc:
            raise RuntimeFailure(f"llama.cpp could not load {model_path.name!r}: {exc}") from exc
        self._embedder: Any = None
        self.last_stats: GenerationStats | None = None
        beside = model_path.parent / CHAT_TEMPLATE_FILE  # given at convert time to a GGUF bundled as it is
        self._chat_template: str | None = options.chat_template or (
            beside.read_text(encoding="utf-8") if beside.is_file() else None
        )

    @property
    def metadata(self) -> dict[str, str]:
        return dict(self._llm.metadata)

    @property
    def template_knows_tool_role(self) -> bool:
        """Whether the chat template speaks of tools (a `tool` role of its own for tool results)."""
        return "tool" in (self._chat_template or self._llm.metadata.get("tokenizer.chat_template") or "")

    def run(self, inputs: Mapping[str, np.ndarray], *, check: bool = True) -> dict[str, np.ndarray]:
        raise UnsupportedOperationError(
            f"{self._path.name} is a language model: use generate(prompt), chat(messages) or embed(texts), not run()"
        )

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.run(inputs)

    def generate(  # type: ignore[override]  # the base takes **options; these are the ones llama.cpp has
        self,
        prompt: str,
        *,
        max_tokens: int = 256,
        temperature: float = 0.8,
        top_p: float = 0.95,
        top_k: int = 40,
        seed: int | None = None,
        stop: str | Sequence[str] | None = None,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        logit_bias: Mapping[int, float] | None = None,
        logprobs: int | None = None,
        constraint: OutputConstraint | None = None,
        **unknown: object,
    ) -> Iterator[str]:
        """Stream the continuation of `prompt` piece by piece (temperature 0 is greedy). With `logprobs=N`
        each piece (a `runtimes.Piece`) carries its tokens' log-probabilities and N alternatives."""
        tokens = self._llm.tokenize(prompt.encode("utf-8"), add_bos=self._add_bos(), special=False)
        sampling = Sampling(
            temperature=temperature, top_p=top_p, top_k=top_k, seed=seed, presence_penalty=presence_penalty,
            frequency_penalty=frequency_penalty, logit_bias=dict(logit_bias or {}),
        )  # fmt: skip
        return self._stream(tokens, max_tokens, sampling, stop, logprobs, constraint, unknown)

    def chat(
        self,
        messages: Sequence[Mapping[str, str]],
        *,
        max_tokens: int = 256,
        temperature: float = 0.8,
        top_p: float = 0.95,
        top_k: int = 40,
        seed: int | None = None,
        stop: str | Sequence[str] | None = None,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        logit_bias: Mapping[int, float] | None = None,
        logprobs: int | None = None,
        constraint: OutputConstraint | None = None,
        **unknown: object,
    ) -> Iterator[str]:
        """Stream the assistant's reply to `messages` ({"role", "content"} dicts) using the model's template."""
        text = self.render_chat(messages)
        tokens = self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        eos = self._llm.detokenize([self._llm.token_eos()], special=True).decode("utf-8", "replace")
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        sampling = Sampling(
            temperature=temperature, top_p=top_p, top_k=top_k, seed=seed, presence_penalty=presence_penalty,
            frequency_penalty=frequency_penalty, logit_bias=dict(logit_bias or {}),
        )  # fmt: skip
        return self._stream(tokens, max_tokens, sampling, [*stops, eos], logprobs, constraint, unknown)

    def count_prompt_tokens(self, prompt: str | None = None, messages: Sequence[Mapping[str, str]] = ()) -> int:
        """What generate(prompt) or chat(messages) would feed; only the vocabulary is read, no engine lock needed."""
        if prompt is not None:
            return len(self._llm.tokenize(prompt.encode("utf-8"), add_bos=self._add_bos(), special=False))
        text = self.render_chat(messages)
        return len(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def render_chat(self, messages: Sequence[Mapping[str, str]]) -> str:
        template = self._chat_template or self._llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise UnsupportedOperationError(
                f"{self._path.name} carries no chat template; use generate(prompt), or give one "
                "(convert/serve --chat-template FILE)"
            )
        for i, m in enumerate(messages):
            if not isinstance(m, Mapping) or "role" not in m or "content" not in m:
                raise InputError(f"message {i} must be a mapping with 'role' and 'content'; got {m!r}")
        return render_chat_template(
            template, messages, bos_token=self._token_text(self._llm.token_bos()),
            eos_token=self._token_text(self._llm.token_eos()),
        )  # fmt: skip

    def instance_bytes(self, operation: str) -> int:
        """Embeddings run in a second llama.cpp instance (pooling is fixed when a context is made): what `fit`
        counts for a session at EMBED_CONTEXT (engine, the weights mapped again, KV cache), plus the float32
        logits llama.cpp reserves for a whole batch (compute buffer) and for each of its parallel sequences
        (output buffer), which a full batch touches. Measured for SmolLM2: +323 MiB RSS for a full batch,
        288 MiB counted; +172 MiB for one short text."""
        if operation != "embed" or self._embedder is not None:
            return 0
        from device_profiles.estimate import PROCESS_BYTES, estimate_memory

        batch = min(self._n_ctx, EMBED_CONTEXT)
        sequences = min(batch, EMBED_SEQUENCES)
        n_vocab, n_embd = self._llm.n_vocab(), self._llm.n_embd()
        buffers = 4 * (batch * n_vocab + sequences * (n_vocab + n_embd))
        return estimate_memory(self._facts, batch).peak_bytes - PROCESS_BYTES + buffers

    def embed(self, texts: list[str]) -> np.ndarray:
        """One mean-pooled embedding per text, float32 [len(texts), embedding size]."""
        if self._embedder is None:
            llama_cpp = import_llama_cpp()

            with quiet_stderr():  # llama.cpp warns that mean pooling differs from the model's default
                self._embedder = llama_cpp.Llama(
                    model_path=str(self._path), n_ctx=min(self._n_ctx, EMBED_CONTEXT), n_threads=self._threads,
                    embedding=True,
                    pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN, verbose=False,
                )  # fmt: skip
        return np.asarray(self._embedder.embed(list(texts)), dtype=np.float32)

    def score(self, tokens: np.ndarray) -> np.ndarray:
        """Logits at every position (row i predicts token i + 1), evaluated as one batch in a fresh context, as
        conversion measured them (converters/gguf/evaluate.py), so a device reproduces the recorded numbers."""
        llama_cpp = import_llama_cpp()

        ids = [int(t) for t in np.asarray(tokens).reshape(-1)]
        with quiet_stderr():
            scorer = llama_cpp.Llama(
                model_path=str(self._path), n_ctx=max(64, len(ids) + 8), n_threads=self._threads, logits_all=True,
                verbose=False,
            )  # fmt: skip
        try:
            scorer.eval(ids)
            return np.array(scorer.scores[: len(ids)], dtype=np.float32)
        finally:
            scorer.close()

    def close(self) -> None:
        for llm in (self._llm, self._embedder):
            if llm is not None:
                llm.close()
        self._embedder = None

    def _add_bos(self) -> bool:
        return str(self._llm.metadata.get("tokenizer.ggml.add_bos_token", "true")).lower() == "true"

    def _token_text(self, token: int) -> str:
        return "" if token < 0 else self._llm.detokenize([token], special=True).decode("utf-8", "replace")

    def _stream(
        self,
        tokens: list[int],
        max_tokens: int,
        sampling: Sampling,
        stop: str | Sequence[str] | None,
        logprobs: int | None,
        constraint: OutputConstraint | None,
        unknown: Mapping[str, object],
    ) -> Iterator[str]:
        if unknown:
            raise ConfigError(f"unknown generation options {sorted(unknown)}; valid: {list(GENERATE_OPTIONS)}")
        check_sampling(max_tokens, sampling.temperature, sampling.top_p, sampling.top_k)
        if logprobs is not None and not 0 <= logprobs <= MAX_TOP_LOGPROBS:
            raise ConfigError(f"logprobs must be between 0 and {MAX_TOP_LOGPROBS} alternatives, got {logprobs}")
        n_vocab = self._llm.n_vocab()
        if bad := [t for t in (sampling.logit_bias or {}) if not 0 <= int(t) < n_vocab]:
            raise ConfigError(f"logit_bias names tokens {bad[:5]} outside the vocabulary (0 to {n_vocab - 1})")
        if not tokens:
            raise InputError("the prompt is empty: give at least one character")
        if len(tokens) + max_tokens > self._n_ctx:
            raise ContextLengthError(
                f"prompt of {len(tokens)} tokens + max_tokens {max_tokens} exceeds the context of {self._n_ctx}"
            )
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        if constraint is not None:
            from runtimes.llama_cpp_grammar import check_grammar

            check_grammar(self._llm, constraint)  # a schema llama.cpp cannot follow is refused before streaming
        return self._pieces(tokens, max_tokens, sampling, stops, logprobs, constraint)

    def _pieces(
        self,
        tokens: list[int],
        max_tokens: int,
        sampling: Sampling,
        stops: list[str],
        logprobs: int | None,
        constraint: OutputConstraint | None,
    ) -> Iterator[str]:
        start = time.perf_counter()
        first: float | None = None
        end = StreamEnd()
        pieces = stream_tokens(
            self._llm, tokens, max_tokens, sampling, stops, logprobs, end, constraint=constraint,
            states=self._states, drafter=self._drafter,
        )  # fmt: skip
        for piece in pieces:
            first = first if first is not None else time.perf_counter() - start
            yield piece
        total = time.perf_counter() - start
        self.last_stats = GenerationStats(
            len(tokens), end.tokens, first if first is not None else total, total, end.finish_reason,
            end.cached_tokens, end.drafted, end.accepted,
        )  # fmt: skip


class LlamaCppRuntime(Runtime):
    backend = Backend.GGUF

    @classmethod
    def available(cls) -> bool:
        return importlib.util.find_spec("llama_cpp") is not None

    def _load(self, variant: Variant, root: Path, options: SessionOptions) -> Session:
        path, context = single_file(variant, root, ".gguf"), options.context or DEFAULT_CONTEXT
        return LlamaSession(path, options, context, ModelFacts.of_variant(variant, root))

    def context_length(self, variant: Variant, options: SessionOptions | None = None) -> int | None:
        return (options.context if options else None) or DEFAULT_CONTEXT

    def import_engine(self, variant: Variant) -> None:
        import_llama_cpp()
