"""The one interface every engine adapter implements: Runtime loads a variant, Session runs it."""

from __future__ import annotations

import resource
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from edge_sdk.bundle import Variant
from edge_sdk.errors import ConfigError, InputError, UnsupportedOperationError, choices
from edge_sdk.types import Backend, TensorSpec

MAX_ACCEPTED_SHAPES = 64  # per input, shapes remembered as valid so that the next call with one skips the check


@dataclass(frozen=True, kw_only=True)
class SessionOptions:
    """Knobs common to every engine. `threads=None` lets the engine choose (usually all cores).

    `context`: tokens of prompt + generation a language model's session holds (None: the engine's default);
    tensor engines ignore it. A board with little memory serves a short context; the cloud a long one."""

    threads: int | None = None
    context: int | None = None
    chat_template: str | None = None  # a language model's chat template, instead of the one the bundle carries
    # Language models: states of recent prompts kept in RAM, so a prompt sharing a prefix with an earlier one
    # (a long system prompt) evaluates only the rest. 0 turns prompt reuse off: every prompt evaluated whole.
    prompt_cache_mb: int = 64
    # Language models: "prompt-lookup" drafts tokens by matching the last tokens against the prompt (n-gram
    # speculation): same output, faster on answers that quote their input. None: one token per step.
    speculative: str | None = None
    draft_tokens: int = 8  # most tokens drafted per step


@dataclass(frozen=True, kw_only=True)
class OutputConstraint:
    """Output a grammar engine must produce: JSON valid for `schema` (a JSON Schema), between `prefix` and
    `suffix`. `lazy`: free text until `prefix` appears, constrained from there on (a tool call the model may or
    may not make). Passed as `constraint=` to generate/chat of sessions whose `supports_grammar` is True."""

    schema: Mapping[str, Any]
    prefix: str = ""
    suffix: str = ""
    lazy: bool = False


@dataclass(frozen=True)
class TokenLogprob:
    """How likely the model found one generated token (natural log), and its most likely alternatives."""

    token: str
    raw: bytes  # the token's bytes: a token may hold part of a UTF-8 character
    logprob: float
    top: tuple[TokenLogprob, ...] = ()


class Piece(str):
    """A piece of generated text. Engines that can also say how likely its tokens were attach them, so callers
    that only want text keep treating pieces as strings."""

    logprobs: tuple[TokenLogprob, ...]

    def __new__(cls, text: str, logprobs: Sequence[TokenLogprob] = ()) -> Piece:
        piece = super().__new__(cls, text)
        piece.logprobs = tuple(logprobs)
        return piece


@dataclass(frozen=True)
class LoadStats:
    load_seconds: float
    resident_bytes_delta: int  # growth of this process's peak RSS while loading


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


class Session(ABC):
    """A loaded variant. `run` checks inputs against the variant's TensorSpecs before the engine sees them."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    stats: LoadStats
    # Whether two threads may call run/generate at once; servers serialise calls when False.
    thread_safe: ClassVar[bool] = False
    # Tokens of prompt + generation a language model's session holds; None for tensor models.
    context_length: int | None = None
    # Whether generate/chat accept `constraint=` (an OutputConstraint): structured output and tool calls need a
    # grammar engine; language-model sessions without one leave this False and callers refuse those requests.
    supports_grammar: ClassVar[bool] = False

    # Which variant this session runs (set by Runtime.load).
    variant_id: str | None = None

    def __repr__(self) -> str:
        ports = "; ".join(s.describe() for s in self.inputs) if getattr(self, "inputs", None) else "?"
        context = f", context {self.context_length}" if self.context_length else ""
        stats = getattr(self, "stats", None)
        loaded = f", loaded in {stats.load_seconds:.2f} s" if stats is not None else ""
        return f"<{type(self).__name__} variant {self.variant_id!r}: {ports}{context}{loaded}>"

    def run(self, inputs: Mapping[str, np.ndarray], *, check: bool = True) -> dict[str, np.ndarray]:
        """Run the model on `inputs` (name -> array). Names, dtypes and shapes are checked against `self.inputs`
        first; `check=False` (a trusted caller that built the arrays for this model) skips the shape checks, but a
        missing input or a wrong dtype still raises InputError: an engine fed the wrong dtype reads garbage."""
        return self._run(self.check_inputs(inputs) if check else self.check_dtypes(inputs))

    @abstractmethod
    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def _signature(self) -> tuple[tuple[str, np.dtype, int, tuple[tuple[int, int], ...], set[tuple[int, ...]]], ...]:
        """Per input: name, dtype, rank, the fixed dimensions (index, size) and the shapes already accepted,
        built once per session: a call with a shape seen before costs a dtype compare and a set lookup."""
        signature = self.__dict__.get("_signature_cache")
        if signature is None:
            signature = self.__dict__["_signature_cache"] = tuple(
                (
                    s.name,
                    s.dtype.numpy,
                    len(s.shape),
                    tuple((i, d) for i, d in enumerate(s.shape) if isinstance(d, int)),
                    set(),
                )
                for s in self.inputs
            )
        return signature

    def check_inputs(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The inputs, validated: names, dtypes, ranks and fixed dimensions. Arrays are passed on as given
        (never copied); a non-array is turned into one, then checked like any other."""
        signature = self.__dict__.get("_signature_cache") or self._signature()
        if len(inputs) != len(signature):
            self._raise_names(inputs)
        checked = inputs if type(inputs) is dict else dict(inputs)
        for name, dtype, ndim, fixed, accepted in signature:
            array = inputs.get(name)
            if type(array) is not np.ndarray:
                if array is None:
                    self._raise_names(inputs)
                array = np.asarray(array)
                checked = dict(checked) if checked is inputs else checked  # never change the caller's dict
                checked[name] = array
            if array.dtype is not dtype and array.dtype != dtype:  # numpy's builtin dtypes are singletons
                self._raise_mismatch(name, array)
            shape = array.shape
            if shape not in accepted:
                if len(shape) != ndim or any(shape[i] != d for i, d in fixed):
                    self._raise_mismatch(name, array)
                if len(accepted) >= MAX_ACCEPTED_SHAPES:  # a caller cycling through batch sizes: stay bounded
                    accepted.clear()
                accepted.add(shape)
        return checked

    def check_dtypes(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The trusted path (`run(check=False)`): every input present as an array of the right dtype; shapes are
        the caller's word."""
        for name, dtype, _ndim, _fixed, _accepted in self.__dict__.get("_signature_cache") or self._signature():
            array = inputs.get(name)
            if array is None:
                self._raise_names(inputs)
            if getattr(array, "dtype", None) != dtype:
                self._raise_mismatch(name, np.asarray(array))
        return inputs if type(inputs) is dict else dict(inputs)

    def _raise_mismatch(self, name: str, array: np.ndarray) -> None:
        spec = next(s for s in self.inputs if s.name == name)
        raise InputError(spec.mismatch(array) or f"input {name!r} does not match {spec.describe()}")

    def _raise_names(self, inputs: Mapping[str, np.ndarray]) -> None:
        wanted, given = {s.name for s in self.inputs}, set(inputs)
        missing, unknown = sorted(wanted - given), sorted(given - wanted)
        parts = [f"missing {missing}"] if missing else []
        parts += [f"unknown {unknown}"] if unknown else []
        raise InputError(
            f"inputs do not match the model: {', '.join(parts)}; "
            f"expected: {'; '.join(s.describe() for s in self.inputs)}"
        )

    def generate(self, prompt: str, **options: object) -> Iterator[str]:
        raise UnsupportedOperationError(f"{type(self).__name__} runs tensor models; it cannot generate text")

    def embed(self, texts: list[str]) -> np.ndarray:
        raise UnsupportedOperationError(f"{type(self).__name__} runs tensor models; it cannot embed text")

    def score(self, tokens: np.ndarray) -> np.ndarray:
        """A language model's logits at every position of `tokens` [n, vocab]: how its golden set is re-checked."""
        raise UnsupportedOperationError(f"{type(self).__name__} runs tensor models; it cannot score tokens")

    def count_prompt_tokens(self, prompt: str | None = None, messages: Sequence[Mapping[str, str]] = ()) -> int:
        """Tokens the engine would feed for a prompt, or for chat messages after the model's template."""
        raise UnsupportedOperationError(f"{type(self).__name__} runs tensor models; it has no tokenizer")

    def instance_bytes(self, operation: str) -> int:
        """Bytes calling `operation` ("embed", ...) would add because the engine opens another instance for it
        (estimated as `edge-sdk fit` does); 0 when it needs none or has it open already."""
        return 0

    def close(self) -> None:  # noqa: B027 - engines without resources to free need not override
        """Release the engine's resources."""

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Runtime(ABC):
    """Loads variants of one backend. Subclasses set `backend`."""

    backend: ClassVar[Backend]

    @classmethod
    @abstractmethod
    def available(cls) -> bool: ...

    def load(self, variant: Variant, root: Path, options: SessionOptions | None = None) -> Session:
        """Load `variant` from the bundle directory `root`, measuring load time and memory."""
        if variant.backend is not self.backend:
            raise InputError(
                f"variant {variant.id!r} is for {variant.backend.value}, this runtime runs {self.backend.value}"
            )
        before, start = _peak_rss_bytes(), time.perf_counter()
        session = self._load(variant, root, options or SessionOptions())
        session.stats = LoadStats(time.perf_counter() - start, max(0, _peak_rss_bytes() - before))
        session.variant_id = variant.id
        return session

    @abstractmethod
    def _load(self, variant: Variant, root: Path, options: SessionOptions) -> Session: ...

    def context_length(self, variant: Variant, options: SessionOptions | None = None) -> int | None:
        """The `context_length` a loaded session of `variant` will have, known without loading it."""
        return None

    def import_engine(self, variant: Variant) -> None:  # noqa: B027 (a hook most adapters leave as it is)
        """Import the engine that will load `variant` now, if the adapter imports it only as it loads. The daemon
        does this before it imports its web stack, then loads in a thread: the load (native, without the GIL)
        overlaps that import, where importing the engine beside it would compete for the GIL. Adapters that import
        their engine with their module have nothing left to do."""


def single_file(variant: Variant, root: Path, suffix: str) -> Path:
    """The one file of `variant` ending in `suffix`, for engines that load a single artifact."""
    matches = [f for f in variant.files if f.path.endswith(suffix)]
    if len(matches) != 1:
        raise InputError(
            f"variant {variant.id!r} should hold exactly one {suffix} file; "
            f"it holds {choices(f.path for f in variant.files)}"
        )
    return root / matches[0].path


def check_sampling(max_tokens: int, temperature: float, top_p: float, top_k: int) -> None:
    """The generation options every language-model engine takes, checked alike (ConfigError naming the range)."""
    if max_tokens < 1:
        raise ConfigError(f"max_tokens must be at least 1, got {max_tokens}")
    if temperature < 0:
        raise ConfigError(f"temperature must be >= 0 (0 is greedy), got {temperature}")
    if not 0 <= top_p <= 1:
        raise ConfigError(f"top_p must be in [0, 1] (0 keeps only the most likely token), got {top_p}")
    if top_k < 0:
        raise ConfigError(f"top_k must be >= 0 (0 disables it), got {top_k}")
