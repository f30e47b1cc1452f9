"""The llama.cpp token loop: sampling, stop strings, finish reason and per-token log-probabilities.

Our own loop over `Llama.generate` rather than `create_completion`: that one gives log-probabilities only to
models created with `logits_all=True` (a context × vocabulary float array: ~400 MB for SmolLM2 at 2,048 tokens),
while the logits of the token just sampled are still in the context here, free to read.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from runtimes.base import Piece, TokenLogprob

MAX_TOP_LOGPROBS = 20  # OpenAI's limit for chat; more would only cost time per token


@dataclass(frozen=True, kw_only=True)
class Sampling:
    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 40
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: Mapping[int, float] = field(default_factory=dict)


@dataclass
class StreamEnd:
    """Filled in when the loop ends: why it stopped and how many tokens it sampled."""

    finish_reason: str = "length"  # "stop": end-of-generation token or a stop string; "length": max_tokens
    tokens: int = 0


def stream_tokens(
    llm: Any,
    prompt: list[int],
    max_tokens: int,
    sampling: Sampling,
    stops: Sequence[str],
    logprobs: int | None,
    end: StreamEnd,
) -> Iterator[Piece]:
    """Pieces of text as soon as they cannot be the start of a stop string; `logprobs` (None: not computed)
    alternatives per token. Text after a stop string is never shown."""
    import llama_cpp

    llm.set_seed(sampling.seed if sampling.seed is not None else random.randrange(2**32))
    stops = [s for s in stops if s]
    vocab, n_vocab = llm._model.vocab, llm.n_vocab()
    done: list[int] = []
    undecoded, text = b"", ""  # bytes of a character split across tokens; decoded text not shown yet
    entries: list[TokenLogprob] = []  # the tokens behind `text` and `undecoded`
    processors = _bias(sampling.logit_bias)
    tokens = llm.generate(
        prompt, top_k=sampling.top_k, top_p=sampling.top_p, min_p=0.05, temp=sampling.temperature,
        repeat_penalty=1.0, frequency_penalty=sampling.frequency_penalty,
        presence_penalty=sampling.presence_penalty, logits_processor=processors,
    )  # fmt: skip
    for token in tokens:
        if llama_cpp.llama_vocab_is_eog(vocab, token):
            end.finish_reason = "stop"
            break
        raw = llm.detokenize([token], prev_tokens=prompt + done)
        done.append(token)
        end.tokens = len(done)
        if logprobs is not None:
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,))
            entries.append(_logprob(llm, logits, token, raw, logprobs))
        decoded, undecoded = _utf8_prefix(undecoded + raw)
        text += decoded
        cut = _first_stop(text, stops)
        if cut is not None:
            text, undecoded = text[:cut], b""
            end.finish_reason = "stop"
            break
        if len(done) >= max_tokens:
            break
        shown = len(text) - _held_back(text, stops)
        if shown > 0 and not undecoded:
            yield Piece(text[:shown], entries)
            text, entries = text[shown:], []
    text += undecoded.decode("utf-8", "replace")
    if text or entries:
        yield Piece(text, entries)


def _bias(logit_bias: Mapping[int, float]) -> Any:
    if not logit_bias:
        return None
    ids = np.fromiter(logit_bias.keys(), dtype=np.int64)
    values = np.fromiter(logit_bias.values(), dtype=np.float32)

    def apply(_input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        scores[ids] += values
        return scores

    return [apply]


def _logprob(llm: Any, logits: np.ndarray, token: int, raw: bytes, top: int) -> TokenLogprob:
    shifted = logits.astype(np.float64) - logits.max()
    logprobs = shifted - np.log(np.exp(shifted).sum())
    alternatives: tuple[TokenLogprob, ...] = ()
    if top > 0:
        best = np.argpartition(-logprobs, top)[:top]
        best = best[np.argsort(-logprobs[best])]
        alternatives = tuple(_entry(llm.detokenize([int(i)]), float(logprobs[i])) for i in best)
    return _entry(raw, float(logprobs[token]), alternatives)


def _entry(raw: bytes, logprob: float, top: tuple[TokenLogprob, ...] = ()) -> TokenLogprob:
    return TokenLogprob(raw.decode("utf-8", "replace"), raw, logprob, top)


def _utf8_prefix(data: bytes) -> tuple[str, bytes]:
    """The complete characters of `data`, and the bytes of a character the next token completes."""
    for cut in range(len(data), max(len(data) - 4, -1), -1):
        try:
            return data[:cut].decode("utf-8"), data[cut:]
        except UnicodeDecodeError:
            continue
    return data.decode("utf-8", "replace"), b""  # invalid, not merely incomplete


def _first_stop(text: str, stops: Sequence[str]) -> int | None:
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(found) if found else None


def _held_back(text: str, stops: Sequence[str]) -> int:
    """Characters at the end of `text` that may begin a stop string: shown once the next token decides."""
    return max((n for s in stops for n in range(min(len(s) - 1, len(text)), 0, -1) if text.endswith(s[:n])), default=0)
