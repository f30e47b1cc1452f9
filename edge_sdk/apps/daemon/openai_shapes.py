"""The shapes of OpenAI answers: chat and text completions, whole or as SSE chunks, and embeddings."""

from __future__ import annotations

import base64
import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Head:
    id: str
    created: int
    model: str


def _token(entry: Any) -> dict[str, Any]:
    return {"token": entry.token, "logprob": entry.logprob, "bytes": list(entry.raw)}


def _entries(piece: Any) -> tuple[Any, ...]:
    return tuple(getattr(piece, "logprobs", ()))


def chat_logprobs(entries: Sequence[Any]) -> dict[str, Any]:
    content = [{**_token(e), "top_logprobs": [_token(t) for t in e.top]} for e in entries]
    return {"content": content, "refusal": None}


def text_logprobs(entries: Sequence[Any], offset: int) -> dict[str, Any]:
    """The legacy completions shape: parallel lists, offsets into the choice's text."""
    offsets = []
    for e in entries:
        offsets.append(offset)
        offset += len(e.token)
    return {
        "tokens": [e.token for e in entries],
        "token_logprobs": [e.logprob for e in entries],
        "top_logprobs": [{t.token: t.logprob for t in e.top} for e in entries],
        "text_offset": offsets,
    }


@dataclass
class _Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens reused from earlier requests (OpenAI's prompt_tokens_details)

    def add(self, prompt: int, completion: int, cached: int = 0) -> None:
        self.prompt_tokens += prompt
        self.completion_tokens += completion
        self.cached_tokens += cached

    def body(self) -> dict[str, Any]:
        total = self.prompt_tokens + self.completion_tokens
        return {
            "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens, "total_tokens": total,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
        }  # fmt: skip


def _tool_call_deltas(calls: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Whole calls in one delta each, with the `index` a streamed tool call carries."""
    return [{"index": i, **call} for i, call in enumerate(calls)]


@dataclass
class Stream:
    """SSE chunks. A chat choice's first chunk carries the role; with `include_usage` every chunk has
    `usage: null` and one last chunk with no choices carries the totals, as OpenAI's streams do."""

    head: Head
    chat: bool
    include_usage: bool
    logprobs: bool
    echo: dict[int, str] = field(default_factory=dict)
    _started: set[int] = field(default_factory=set)
    _offsets: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    _usage: _Usage = field(default_factory=_Usage)

    def _chunk(self, index: int, text: str | None, finish: str | None, entries: Sequence[Any] = ()) -> str:
        logprobs = None
        if self.logprobs and entries:
            logprobs = chat_logprobs(entries) if self.chat else text_logprobs(entries, self._offsets[index])
        if self.chat:
            delta = {"content": text} if text is not None else {}
            choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
        else:
            choice = {"index": index, "text": text or "", "logprobs": logprobs, "finish_reason": finish}
        self._offsets[index] += len(text or "")
        return self._event(choice)

    def _event(self, choice: dict[str, Any] | None) -> str:
        kind = "chat.completion.chunk" if self.chat else "text_completion"
        body: dict[str, Any] = {
            "id": self.head.id, "object": kind, "created": self.head.created, "model": self.head.model,
            "choices": [choice] if choice is not None else [],
        }  # fmt: skip
        if self.include_usage:
            body["usage"] = None
        return f"data: {json.dumps(body)}\n\n"

    def _start(self, index: int) -> str:
        if index in self._started:
            return ""
        self._started.add(index)
        if self.chat:
            return self._event({"index": index, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                                "finish_reason": None})  # fmt: skip
        return self._chunk(index, self.echo[index], None) if self.echo.get(index) else ""

    def piece(self, index: int, piece: str) -> str:
        return self._start(index) + self._chunk(index, str(piece), None, _entries(piece))

    def end(self, index: int, finish: str, tool_calls: Sequence[dict[str, Any]] | None = None) -> str:
        calls = ""
        if tool_calls:
            delta = {"tool_calls": _tool_call_deltas(tool_calls)}
            calls = self._event({"index": index, "delta": delta, "logprobs": None, "finish_reason": None})
        return self._start(index) + calls + self._chunk(index, None if self.chat else "", finish)

    def count(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> None:
        self._usage.add(prompt_tokens, completion_tokens, cached_tokens)

    def usage_and_done(self) -> str:
        last = ""
        if self.include_usage:
            kind = "chat.completion.chunk" if self.chat else "text_completion"
            body = {
                "id": self.head.id, "object": kind, "created": self.head.created, "model": self.head.model,
                "choices": [], "usage": self._usage.body(),
            }  # fmt: skip
            last = f"data: {json.dumps(body)}\n\n"
        return last + "data: [DONE]\n\n"


@dataclass
class Answer:
    """A whole (not streamed) completion, choices in index order."""

    head: Head
    chat: bool
    logprobs: bool
    echo: dict[int, str] = field(default_factory=dict)
    _text: dict[int, list[str]] = field(default_factory=lambda: defaultdict(list))
    _entries: dict[int, list[Any]] = field(default_factory=lambda: defaultdict(list))
    _finish: dict[int, str] = field(default_factory=dict)
    _calls: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    _usage: _Usage = field(default_factory=_Usage)

    @property
    def completion_tokens(self) -> int:
        return self._usage.completion_tokens

    def piece(self, index: int, piece: str) -> None:
        self._text[index].append(str(piece))
        self._entries[index].extend(_entries(piece))

    def end(
        self,
        index: int,
        finish: str,
        prompt_tokens: int,
        completion_tokens: int,
        cached_tokens: int = 0,
        tool_calls: list[dict[str, Any]] | None = None,
    ) -> None:
        self._finish[index] = finish
        self._usage.add(prompt_tokens, completion_tokens, cached_tokens)
        if tool_calls:
            self._calls[index] = tool_calls

    def body(self) -> dict[str, Any]:
        choices = []
        for index in sorted(self._finish):
            text = "".join(self._text[index])
            entries = self._entries[index]
            if self.chat:
                logprobs = chat_logprobs(entries) if self.logprobs else None
                message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
                if index in self._calls:
                    message.update(content=text or None, tool_calls=self._calls[index])
                choices.append({"index": index, "message": message, "logprobs": logprobs,
                                "finish_reason": self._finish[index]})  # fmt: skip
            else:
                echoed = self.echo.get(index, "")
                logprobs = text_logprobs(entries, len(echoed)) if self.logprobs else None
                choices.append({"index": index, "text": echoed + text, "logprobs": logprobs,
                                "finish_reason": self._finish[index]})  # fmt: skip
        return {
            "id": self.head.id, "object": "chat.completion" if self.chat else "text_completion",
            "created": self.head.created, "model": self.head.model, "choices": choices, "usage": self._usage.body(),
        }  # fmt: skip


def embeddings(model: str, vectors: Any, tokens: int, encoding: str) -> dict[str, Any]:
    """`encoding` base64: the little-endian float32 bytes, as OpenAI sends them (and its client asks by default)."""
    data = []
    for i, vector in enumerate(vectors):
        array = np.asarray(vector, dtype="<f4")
        value: Any = base64.b64encode(array.tobytes()).decode() if encoding == "base64" else array.tolist()
        data.append({"object": "embedding", "index": i, "embedding": value})
    return {"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
