"""The llama.cpp token loop: sampling (with a grammar when asked), prompt reuse across requests, drafted tokens,
stop strings, finish reason and per-token log-probabilities.

Our own loop rather than `create_completion`: that one gives log-probabilities only to models created with
`logits_all=True` (a context × vocabulary float array: ~400 MB for SmolLM2 at 2,048 tokens), and its drafting
needs the same; here only the few positions evaluated in the last batch carry logits, free to read.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from runtimes.base import OutputConstraint, Piece, TokenLogprob
from runtimes.llama_cpp_cache import PromptStates
from runtimes.llama_cpp_draft import Drafter
from runtimes.llama_cpp_grammar import add_grammar

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
    """Filled in when the loop ends: why it stopped, how many tokens it sampled, how many prompt tokens came from
    the context of earlier requests, and how many drafted tokens the model confirmed."""

    finish_reason: str = "length"  # "stop": end-of-generation token or a stop string; "length": max_tokens
    tokens: int = 0
    cached_tokens: int = 0
    drafted: int = 0
    accepted: int = 0


def stream_tokens(
    llm: Any,
    prompt: list[int],
    max_tokens: int,
    sampling: Sampling,
    stops: Sequence[str],
    logprobs: int | None,
    end: StreamEnd,
    *,
    constraint: OutputConstraint | None = None,
    states: PromptStates | None = None,
    drafter: Drafter | None = None,
) -> Iterator[Piece]:
    """Pieces of text as soon as they cannot be the start of a stop string; `logprobs` (None: not computed)
    alternatives per token. Text after a stop string is never shown."""
    import llama_cpp

    stops = [s for s in stops if s]
    vocab, n_vocab = llm._model.vocab, llm.n_vocab()
    done: list[int] = []
    undecoded, text = b"", ""  # bytes of a character split across tokens; decoded text not shown yet
    entries: list[TokenLogprob] = []  # the tokens behind `text` and `undecoded`
    chain = _sampler(llm, sampling, constraint)
    try:
        for token, index in _tokens(llm, chain, prompt, max_tokens, states, drafter, end):
            if llama_cpp.llama_vocab_is_eog(vocab, token):
                end.finish_reason = "stop"
                break
            raw = llm.detokenize([token], prev_tokens=prompt + done)
            done.append(token)
            end.tokens = len(done)
            if logprobs is not None:
                logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, index), shape=(n_vocab,))
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
    finally:
        chain.close()


def _sampler(llm: Any, sampling: Sampling, constraint: OutputConstraint | None) -> Any:
    """llama.cpp's sampler chain as llama-cpp-python's `Llama.generate` builds it, with a grammar when asked."""
    from llama_cpp import _internals

    chain = _internals.LlamaSampler()
    n_vocab = llm.n_vocab()
    if sampling.logit_bias:
        chain.add_logit_bias(n_vocab, {int(t): float(b) for t, b in sampling.logit_bias.items()})
    chain.add_penalties(n_vocab, llm.last_n_tokens_size, 1.0, sampling.frequency_penalty, sampling.presence_penalty)
    if constraint is not None:
        try:
            add_grammar(llm, chain, constraint)
        except BaseException:
            chain.close()
            raise
    if sampling.temperature == 0:
        chain.add_greedy()
    else:
        chain.add_top_k(sampling.top_k)
        chain.add_typical(1.0, 1)
        chain.add_top_p(sampling.top_p, 1)
        chain.add_min_p(0.05, 1)
        chain.add_temp(sampling.temperature)
        chain.add_dist(sampling.seed if sampling.seed is not None else random.randrange(2**32))
    return chain


def _tokens(
    llm: Any,
    chain: Any,
    prompt: list[int],
    max_tokens: int,
    states: PromptStates | None,
    drafter: Drafter | None,
    end: StreamEnd,
) -> Iterator[tuple[int, int]]:
    """(token, index of its logits among the last batch's outputs) until the caller stops.

    With a drafter, each step evaluates the last token plus drafted ones in one batch and samples position after
    position while the sample equals the draft: every token is still sampled from the model's own distribution
    given the tokens before it (greedy output is unchanged), but several may come from one evaluation."""
    import llama_cpp

    reuse = (states or PromptStates(0)).prepare(llm, prompt)
    end.cached_tokens = reuse
    pending = list(prompt[reuse:])
    if len(pending) > 1:
        llm.eval(pending[:-1])  # logits only where needed: the last prompt token is evaluated below
        pending = pending[-1:]
    history = list(prompt)
    produced = 0
    while True:
        room = min(max_tokens - produced - 1, llm.n_ctx() - llm.n_tokens - len(pending) - 1)
        draft = drafter(history, room) if drafter is not None and room > 0 else []
        base = llm.n_tokens
        _decode_all(llm, pending + draft)
        outputs = len(draft) + 1
        end.drafted += len(draft)
        for j in range(outputs):
            token = llama_cpp.llama_sampler_sample(chain.sampler, llm.ctx, j - outputs)
            history.append(token)
            produced += 1
            yield token, j - outputs
            if j < len(draft) and token == draft[j]:
                end.accepted += 1
                continue
            keep = base + len(pending) + j  # the tokens evaluated before this one; later drafts are dropped
            if keep < llm.n_tokens:
                llm._ctx.kv_cache_seq_rm(-1, keep, -1)
                llm.n_tokens = keep
            pending = [token]
            break


def _decode_all(llm: Any, tokens: list[int]) -> None:
    """Evaluate `tokens` after the context's, with logits at every one of them (a few: the last + drafts)."""
    llm._ctx.kv_cache_seq_rm(-1, llm.n_tokens, -1)
    llm._batch.set_batch(batch=tokens, n_past=llm.n_tokens, logits_all=True)
    llm._ctx.decode(llm._batch)
    llm.input_ids[llm.n_tokens : llm.n_tokens + len(tokens)] = tokens
    llm.n_tokens += len(tokens)


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
