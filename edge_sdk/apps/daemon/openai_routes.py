"""OpenAI-compatible routes: chat and text completions (SSE streaming), embeddings.

They drive any Session that offers `chat`, `generate` or `embed`; a tensor model answers 400.
"""

from __future__ import annotations

import asyncio
import functools
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from edge_sdk.apps.daemon.config import DaemonConfig
from edge_sdk.apps.daemon.gone import client_gone
from edge_sdk.apps.daemon.hybrid import Ask, Hybrid
from edge_sdk.apps.daemon.pool import ModelPool
from edge_sdk.errors import InputError, UnsupportedOperationError

if TYPE_CHECKING:
    from edge_sdk.apps.daemon.pool import LoadedModel


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")  # OpenAI clients send fields we do not use (user, n=1, ...)

    model: str
    max_tokens: int | None = Field(default=None, gt=0)
    temperature: float = Field(default=0.8, ge=0, le=2)
    top_p: float = Field(default=0.95, gt=0, le=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: str
    content: str


class ChatRequest(_Request):
    messages: list[ChatMessage] = Field(min_length=1)


class CompletionRequest(_Request):
    prompt: str = Field(min_length=1)  # an empty prompt leaves llama.cpp nothing to condition on: it fails


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    input: Annotated[str, Field(min_length=1)] | list[Annotated[str, Field(min_length=1)]]


EMBED_BATCH = 16  # texts per engine call: a timed-out request stops within one batch


DEFAULT_MAX_TOKENS = 256


def _max_tokens(req: _Request) -> int:
    return req.max_tokens or DEFAULT_MAX_TOKENS


def _options(req: _Request) -> dict[str, Any]:
    stop = [req.stop] if isinstance(req.stop, str) else (req.stop or [])
    return {
        "max_tokens": _max_tokens(req),
        "temperature": req.temperature,
        "top_p": req.top_p,
        "seed": req.seed,
        "stop": stop,
    }


def _tokens(loaded: LoadedModel, req: _Request, usage: dict[str, int] | None = None) -> Iterator[str]:
    """The generated pieces; afterwards `usage` gets the prompt's token count, read in the engine's thread
    (while it still holds the engine) so a request that comes next cannot overwrite it first."""
    session: Any = loaded.session
    if isinstance(req, ChatRequest):
        if not hasattr(session, "chat"):
            raise UnsupportedOperationError(
                f"model {loaded.name!r} is a {loaded.variant.backend.value} tensor model; use /v1/infer/{{model}}"
            )
        yield from session.chat([m.model_dump() for m in req.messages], **_options(req))
    else:
        assert isinstance(req, CompletionRequest)
        yield from session.generate(req.prompt, **_options(req))
    stats = getattr(session, "last_stats", None)
    if usage is not None and stats is not None:
        usage["prompt_tokens"] = stats.prompt_tokens


async def _threaded(
    loaded: LoadedModel, produce: Callable[[], Iterator[str]], cancelled: threading.Event
) -> AsyncIterator[str]:
    """Run a blocking token iterator in a thread; stop it when the client goes away."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, object]] = asyncio.Queue()

    def put(item: tuple[str, object]) -> None:
        if not cancelled.is_set():  # nobody reads once the request is gone: never block on a full queue
            loop.call_soon_threadsafe(queue.put_nowait, item)

    def worker() -> None:
        try:
            with loaded.engine():
                tokens = produce()
                try:
                    for piece in tokens:
                        if cancelled.is_set():
                            break
                        put(("token", piece))
                finally:
                    # Closed here, under the engine lock: left to the garbage collector, a stopped generation's
                    # cleanup ran in whatever thread collected it, beside the next request's engine call (segfault).
                    close = getattr(tokens, "close", None)
                    if close is not None:
                        close()
            put(("end", None))
        except BaseException as exc:  # handed to the request task, which maps it to an HTTP error
            put(("error", exc))

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    try:
        while True:
            kind, value = await queue.get()
            if kind == "end":
                return
            if kind == "error":
                raise value  # type: ignore[misc]
            yield str(value)
    finally:
        cancelled.set()


def add_openai_routes(app: FastAPI, pool: ModelPool, config: DaemonConfig) -> None:
    metrics = pool.metrics

    async def complete(req: _Request, kind: str, request: Request) -> Any:
        rid = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        cancelled = threading.Event()

        def chunk(text: str | None, finish: str | None) -> dict[str, Any]:
            if kind == "chat":
                delta = {"content": text} if text is not None else {}
                choice = {"index": 0, "delta": delta, "finish_reason": finish}
                return {
                    "id": rid,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": req.model,
                    "choices": [choice],
                }
            return {
                "id": rid,
                "object": "text_completion",
                "created": created,
                "model": req.model,
                "choices": [{"index": 0, "text": text or "", "finish_reason": finish}],
            }

        if req.stream:
            ctx = pool.use(req.model, client_gone(request))
            # admission errors (404, 429) surface before the stream starts; the wait for a slot is bounded
            loaded = await asyncio.wait_for(ctx.__aenter__(), timeout=config.request_timeout_s)
            deadline = time.monotonic() + config.request_timeout_s

            async def events() -> AsyncIterator[str]:
                start, first, count = time.monotonic(), None, 0
                try:
                    # No per-token disconnect poll: Starlette cancels this generator when the client goes,
                    # and the finally below stops the engine thread (a poll per token cost ~5 % of decode speed).
                    async for piece in _threaded(loaded, lambda: _tokens(loaded, req), cancelled):
                        if first is None:
                            first = time.monotonic() - start
                            metrics.observe("edge_time_to_first_token_seconds", first, model=req.model)
                        count += 1
                        yield f"data: {json.dumps(chunk(piece, None))}\n\n"
                        if time.monotonic() > deadline:  # the per-request timeout ends a stream too
                            message = f"the request took longer than {config.request_timeout_s:g} s"
                            yield f"data: {json.dumps({'error': {'message': message, 'type': 'timeout'}})}\n\n"
                            return
                    yield f"data: {json.dumps(chunk(None, 'stop'))}\n\n"
                    yield "data: [DONE]\n\n"
                finally:
                    cancelled.set()
                    _record_speed(metrics, req.model, count, time.monotonic() - start)
                    await ctx.__aexit__(None, None, None)

            return StreamingResponse(events(), media_type="text/event-stream")

        usage = {"prompt_tokens": 0}

        async def generate() -> tuple[list[str], float]:
            async with pool.use(req.model, client_gone(request)) as loaded:
                start = time.monotonic()
                return [p async for p in _threaded(loaded, lambda: _tokens(loaded, req, usage), cancelled)], start

        # On timeout the generator's finally sets `cancelled`: the engine thread stops at its next token.
        pieces, start = await asyncio.wait_for(generate(), timeout=config.request_timeout_s)
        text = "".join(pieces)
        _record_speed(metrics, req.model, len(pieces), time.monotonic() - start)
        usage.update(completion_tokens=len(pieces), total_tokens=usage["prompt_tokens"] + len(pieces))
        if kind == "chat":
            message = {"role": "assistant", "content": text}
            return {
                "id": rid,
                "object": "chat.completion",
                "created": created,
                "model": req.model,
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": usage,
            }
        return {
            "id": rid,
            "object": "text_completion",
            "created": created,
            "model": req.model,
            "choices": [{"index": 0, "text": text, "finish_reason": "stop"}],
            "usage": usage,
        }

    hybrid = app.state.hybrid = Hybrid(pool, config)
    app.router.on_shutdown.append(hybrid.aclose)

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest, request: Request) -> Any:
        messages = [m.model_dump() for m in body.messages]
        ask = Ask(body.model, "/v1/chat/completions", body.stream, messages=messages, max_tokens=_max_tokens(body))
        return await hybrid.serve(request, ask, lambda: complete(body, "chat", request))

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request) -> Any:
        ask = Ask(body.model, "/v1/completions", body.stream, prompt=body.prompt, max_tokens=_max_tokens(body))
        return await hybrid.serve(request, ask, lambda: complete(body, "text", request))

    @app.post("/v1/embeddings")
    async def embeddings(body: EmbeddingRequest, request: Request) -> Any:
        texts = [body.input] if isinstance(body.input, str) else body.input
        if not texts:
            raise InputError("input must hold at least one text")
        if len(texts) > config.max_embedding_inputs:
            raise InputError(
                f"input holds {len(texts)} texts; at most {config.max_embedding_inputs} per request "
                "(the daemon's --max-embedding-inputs): split it"
            )
        ask = Ask(body.model, "/v1/embeddings", texts=texts)
        return await hybrid.serve(request, ask, lambda: embed(body, texts, request))

    async def embed(body: EmbeddingRequest, texts: list[str], request: Request) -> dict[str, Any]:
        stop = threading.Event()

        def batches(loaded: LoadedModel) -> list[Any]:
            vectors: list[Any] = []
            for at in range(0, len(texts), EMBED_BATCH):
                if stop.is_set():  # timed out: the engine is released after this batch
                    break
                vectors += list(loaded.call(functools.partial(loaded.session.embed, texts[at : at + EMBED_BATCH])))
            return vectors

        async def run() -> list[Any]:
            async with pool.use(body.model, client_gone(request)) as loaded:
                return await asyncio.to_thread(batches, loaded)

        try:
            vectors = await asyncio.wait_for(run(), timeout=config.request_timeout_s)
        finally:
            stop.set()
        data = [
            {"object": "embedding", "index": i, "embedding": np.asarray(v, dtype=np.float32).tolist()}
            for i, v in enumerate(vectors)
        ]
        return {"object": "list", "data": data, "model": body.model, "usage": {"prompt_tokens": 0, "total_tokens": 0}}


def _record_speed(metrics: Any, model: str, tokens: int, seconds: float) -> None:
    if tokens and seconds > 0:
        metrics.set("edge_tokens_per_second", tokens / seconds, model=model)
        metrics.inc("edge_generated_tokens_total", tokens, model=model)
