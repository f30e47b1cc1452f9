"""Drafting tokens for speculative decoding without a second model: prompt lookup (n-gram matching).

When the last few tokens also occur earlier in the prompt or the answer, the tokens that followed them there are
a good guess of what comes next: an answer quoting, summarising or editing its input repeats long runs of it.
The model checks a whole draft in one evaluation (runtimes/llama_cpp_stream.py), so each accepted token saves a
sequential step; a wrong draft costs one wider batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from edge_sdk.errors import ConfigError

# history of tokens so far, most tokens wanted -> drafted tokens
Drafter = Callable[[Sequence[int], int], list[int]]
SPECULATIVE_KINDS = ("prompt-lookup",)


class PromptLookup:
    """Drafts the continuation of the most recent earlier occurrence of the longest matching n-gram (n from
    `max_ngram` down to `min_ngram`). A 1-gram match is too weak a clue for a small model's vocabulary: the
    default needs two tokens in a row."""

    def __init__(self, max_tokens: int = 8, max_ngram: int = 3, min_ngram: int = 2) -> None:
        self.max_tokens, self.max_ngram, self.min_ngram = max_tokens, max_ngram, min_ngram

    def __call__(self, history: Sequence[int], room: int) -> list[int]:
        want = min(self.max_tokens, room)
        if want <= 0:
            return []
        ids = np.asarray(history, dtype=np.int32)
        for n in range(min(self.max_ngram, len(ids) - 1), self.min_ngram - 1, -1):
            tail = ids[-n:]
            windows = np.lib.stride_tricks.sliding_window_view(ids[:-1], n)  # not the tail matching itself
            hits = np.flatnonzero((windows == tail).all(axis=1))
            if len(hits):
                start = int(hits[-1]) + n
                return [int(t) for t in ids[start : start + want]]
        return []


def make_drafter(kind: str | None, max_tokens: int) -> Drafter | None:
    if kind is None:
        return None
    if kind not in SPECULATIVE_KINDS:
        raise ConfigError(f"unknown speculative decoding {kind!r}; valid: {list(SPECULATIVE_KINDS)} (or none)")
    if max_tokens < 1:
        raise ConfigError(f"draft_tokens must be at least 1, got {max_tokens}")
    return PromptLookup(max_tokens)
