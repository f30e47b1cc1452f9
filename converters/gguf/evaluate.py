"""Measure a GGUF against a reference on offline text: mean KL divergence, top-1 agreement, perplexity."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_sdk.errors import RuntimeFailure

# Evaluation text that ships with every Python: docstrings of standard-library modules, not written for a test.
EVAL_MODULES = ("json", "textwrap", "functools", "heapq", "bisect", "csv", "fractions")
DEFAULT_EVAL_TOKENS = 256


def evaluation_text() -> str:
    import importlib

    docs = [inspect.getdoc(importlib.import_module(name)) or "" for name in EVAL_MODULES]
    return "\n\n".join(d.strip() for d in docs if d.strip())


@dataclass(frozen=True)
class Logits:
    tokens: np.ndarray  # int32 [n]
    logits: np.ndarray  # float32 [n, vocab]: row i predicts token i + 1


def open_llama(path: Path, *, n_ctx: int, threads: int | None, logits_all: bool = False) -> object:
    from runtimes.llama_cpp_quiet import import_llama_cpp, quiet_stderr

    try:
        llama_cpp = import_llama_cpp()
    except ModuleNotFoundError as exc:
        from edge_sdk.errors import BackendUnavailableError

        raise BackendUnavailableError(f"running GGUF models needs {exc.name!r}: pip install 'edge-sdk[gguf]'") from exc

    try:
        with quiet_stderr():  # llama.cpp warns on stderr, verbose=False or not, when n_ctx exceeds training
            return llama_cpp.Llama(
                model_path=str(path), n_ctx=n_ctx, n_threads=threads, logits_all=logits_all, verbose=False
            )
    except (ValueError, RuntimeError) as exc:
        raise RuntimeFailure(f"llama.cpp could not load {path.name!r}: {exc}") from exc


def tokenize(path: Path, text: str, *, max_tokens: int = DEFAULT_EVAL_TOKENS) -> np.ndarray:
    llm = open_llama(path, n_ctx=64, threads=1)
    tokens = llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)  # type: ignore[attr-defined]
    meta: dict[str, str] = llm.metadata  # type: ignore[attr-defined]
    trained = int(meta.get(f"{meta.get('general.architecture')}.context_length", 0) or 0)
    limit = min(max_tokens, trained) if trained > 0 else max_tokens
    return np.asarray(tokens[:limit], dtype=np.int32)


def logits_of(path: Path, tokens: np.ndarray, *, threads: int | None = None) -> Logits:
    """llama.cpp's logits for every position of `tokens` on the GGUF at `path`."""
    llm = open_llama(path, n_ctx=max(64, len(tokens) + 8), threads=threads, logits_all=True)
    llm.reset()  # type: ignore[attr-defined]
    llm.eval([int(t) for t in tokens])  # type: ignore[attr-defined]
    scores = np.array(llm.scores[: len(tokens)], dtype=np.float32)  # type: ignore[attr-defined]
    return Logits(tokens, scores)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


@dataclass(frozen=True)
class Quality:
    mean_kl: float  # mean over positions of KL(reference || variant), nats
    top1_agreement: float  # share of positions where both pick the same next token
    perplexity: float  # of the variant on the evaluation text
    reference_perplexity: float
    max_abs_logit_diff: float
    positions: int


def perplexity(logprobs: np.ndarray, tokens: np.ndarray) -> float:
    picked = logprobs[np.arange(len(tokens) - 1), tokens[1:]]
    return float(np.exp(-picked.mean()))


def compare_logits(reference: Logits, variant: Logits) -> Quality:
    if not np.array_equal(reference.tokens, variant.tokens) or reference.logits.shape != variant.logits.shape:
        raise RuntimeFailure("reference and variant were evaluated on different tokens; cannot compare them")
    p, q = _log_softmax(reference.logits[:-1]), _log_softmax(variant.logits[:-1])
    kl = (np.exp(p) * (p - q)).sum(axis=-1)
    return Quality(
        mean_kl=float(max(0.0, kl.mean())),
        top1_agreement=float((p.argmax(-1) == q.argmax(-1)).mean()),
        perplexity=perplexity(q, reference.tokens),
        reference_perplexity=perplexity(p, reference.tokens),
        max_abs_logit_diff=float(np.abs(reference.logits - variant.logits).max()),
        positions=len(reference.tokens) - 1,
    )
