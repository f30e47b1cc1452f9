"""Prompt reuse across requests in one llama.cpp context.

The context's KV cache already holds the previous request's tokens: a prompt sharing a prefix with them (the
same long system prompt) evaluates only its remainder. When requests interleave (two conversations), the
context's tokens are replaced; their state is saved first, in RAM, bounded in bytes, and restored when a later
prompt shares a longer prefix with it than with what the context holds.
"""

from __future__ import annotations

import ctypes
from collections import OrderedDict
from typing import Any

import numpy as np


def common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    n = min(len(a), len(b))
    differ = np.flatnonzero(a[:n] != b[:n])
    return int(differ[0]) if len(differ) else n


class PromptStates:
    """Saved states of earlier contexts, keyed by their tokens; least recently used dropped past the budget."""

    def __init__(self, capacity_bytes: int) -> None:
        self.capacity_bytes = capacity_bytes
        self._states: OrderedDict[tuple[int, ...], bytes] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.capacity_bytes > 0

    def prepare(self, llm: Any, prompt: list[int]) -> int:
        """Leave in the context the longest known prefix of `prompt`; return its length (at most all tokens but
        the last: that one is evaluated to get fresh logits). With the cache off, the context is emptied."""
        wanted = np.asarray(prompt, dtype=np.intc)
        held = np.asarray(llm.input_ids[: llm.n_tokens], dtype=np.intc)
        if not self.enabled:
            return _keep(llm, 0)
        reuse = common_prefix(held, wanted)
        best_key, best = None, reuse
        for key in self._states:
            n = common_prefix(np.asarray(key, dtype=np.intc), wanted)
            if n > best:
                best_key, best = key, n
        restore = self._take(best_key) if best_key is not None else None  # before a save could evict it
        if best_key is not None or reuse < len(held):
            self._save(llm, held)  # its tokens are about to be replaced
        if restore is not None:
            self._load(llm, *restore)
            reuse = best
        return _keep(llm, min(reuse, len(prompt) - 1))

    def _save(self, llm: Any, held: np.ndarray) -> None:
        import llama_cpp

        key = tuple(int(t) for t in held)
        if not key or key in self._states:
            return
        size = llama_cpp.llama_state_get_size(llm.ctx)
        if size > self.capacity_bytes:
            return
        buffer = (ctypes.c_uint8 * size)()
        written = llama_cpp.llama_state_get_data(llm.ctx, buffer, size)
        for older in [k for k in self._states if key[: len(k)] == k]:
            del self._states[older]  # a longer state serves every prefix of it
        self._states[key] = ctypes.string_at(buffer, written)  # one copy of what was written
        while sum(len(v) for v in self._states.values()) > self.capacity_bytes:
            self._states.popitem(last=False)

    def _take(self, key: tuple[int, ...]) -> tuple[tuple[int, ...], bytes]:
        """A state to restore, out of the cache: it is saved again (with what follows) when replaced."""
        return key, self._states.pop(key)

    def _load(self, llm: Any, key: tuple[int, ...], data: bytes) -> None:
        import llama_cpp

        buffer = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        llama_cpp.llama_state_set_data(llm.ctx, buffer, len(data))
        llm.input_ids[: len(key)] = key
        llm.n_tokens = len(key)


def _keep(llm: Any, n: int) -> int:
    """Truncate the context to its first `n` tokens (all of them when the engine cannot cut a sequence)."""
    if n > 0 and llm._ctx.kv_cache_seq_rm(-1, n, -1):
        llm.n_tokens = n
        return n
    llm._ctx.kv_cache_seq_rm(-1, 0, -1)
    llm.n_tokens = 0
    return 0
