"""OpenAI-compatible routes: chat and text completions (SSE streaming), embeddings.

They drive any Session that offers `chat`, `generate` or `embed`; a tensor model answers 400. Request bodies
are validated in openai_schema.py; the shapes of answers are built in openai_shapes.py.
"""

from __future__ import annotations

import asyncio
import functools
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from edge_sdk.apps.daemon import openai_shapes as shapes
from edge_sdk.apps.daemon.config import DaemonConfig
from edge_sdk.apps.daemon.gone import client_gone
from edge_sdk.apps.daemon.hybrid import Ask, Hybrid
from edge_sdk.apps.daemon.openai_schema import ChatRequest, CompletionRequest, EmbeddingRequest
from edge_sdk.apps.daemon.pool import ModelPool
from edge_sdk.apps.daemon.structured import ToolCallReader, constraint, refuse_without_grammar, template_messages
from edge_sdk.errors import UnsupportedOperationError

if TYPE_CHECKING:
    from edge_sdk.apps.daemon.pool import LoadedModel

Request_ = ChatRequest | CompletionRequest
EMBED_BATCH = 16  # texts per engine call: a timed-out request stops within one batch


@dataclass(frozen=True)
class _Run:
    """One choice to generate: `n` of them per prompt, one after another on the same engine."""

    index: int
    prompt: str | None  # completions; None for chat
    seed: int | None
    counts_prompt: bool  # the prompt's tokens are counted once, however many choices it has


@dataclass(frozen=True)
class _End:
    index: int
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    tool_calls: list[dict[str, Any]] | None = None


def _runs(req: Request_) -> list[_Run]:
    prompts: list[str | None] = [*req.prompts()] if isinstance(req, CompletionRequest) else [None]
    runs = []
    for p, prompt in enumerate(prompts):
        for i in range(req.n):
            # Each choice its own seed: the same seed n times would give n equal answers.
            seed = None if req.seed is None else req.seed + i
            runs.append(_Run(p * req.n + i, prompt, seed, i == 0))
    return runs


def _options(req: Request_, run: _Run) -> dict[str, Any]:
    """Generation options; those left at their defaults are not passed, so an engine that lacks them still runs
    plain requests, and refuses (400, naming the option) only a request that uses them."""
    options: dict[str, Any] = {
        "max_tokens": req.token_limit(), "temperature": req.temperature, "top_p": req.top_p, "seed": run.seed,
        "stop": req.stops(),
    }  # fmt: skip
    if "top_k" in req.model_fields_set:
        options["top_k"] = req.top_k
    if req.presence_penalty:
        options["presence_penalty"] = req.presence_penalty
    if req.frequency_penalty:
        options["frequency_penalty"] = req.frequency_penalty
    if req.logit_bias:
        options["logit_bias"] = req.logit_bias
    if req.alternatives() is not None:
        options["logprobs"] = req.alternatives()
    if isinstance(req, ChatRequest) and (grammar := constraint(req)) is not None:
        options["constraint"] = grammar
    return options


def _events(loaded: LoadedModel, req: Request_) -> Iterator[tuple[int, Any] | _End]:
    """(choice index, piece) per generated piece and an _End per choice; runs in the engine's thread, which
    also reads each choice's statistics before the next request can overwrite them."""
    session: Any = loaded.session
    if isinstance(req, ChatRequest) and not hasattr(session, "chat"):
        raise UnsupportedOperationError(
            f"model {loaded.name!r} is a {loaded.variant.backend.value} tensor model; use /v1/infer/{{model}}"
        )
    refuse_without_grammar(loaded.name, loaded.variant.backend.value, session, req)
    tools = isinstance(req, ChatRequest) and req.calls_tools()
    for run in _runs(req):
        if isinstance(req, ChatRequest):
            messages = template_messages(req, bool(getattr(session, "template_knows_tool_role", False)))
            pieces = session.chat(messages, **_options(req, run))
        else:
            pieces = session.generate(run.prompt, **_options(req, run))
        count = 0
        reader = ToolCallReader() if tools else None
        try:
            for piece in pieces:
                count += 1
                if reader is None:
                    yield run.index, piece
                elif (shown := reader.feed(piece)) is not None:
                    yield run.index, shown
        finally:  # stopped early (cancelled, timed out): the engine's generation is closed here, in its thread
            close = getattr(pieces, "close", None)
            if close is not None:
                close()
        stats = getattr(session, "last_stats", None)
        completion = stats.generated_tokens if stats is not None else count
        # An engine that does not say why it stopped: it stopped at the limit, or on its own.
        finish = getattr(stats, "finish_reason", None) or ("length" if completion >= req.token_limit() else "stop")
        prompt_tokens = stats.prompt_tokens if stats is not None and run.counts_prompt else 0
        cached = getattr(stats, "cached_tokens", 0) if run.counts_prompt else 0
        calls = None
        if reader is not None:
            rest, calls = reader.finish()
            if rest:
                yield run.index, rest
            finish = "tool_calls" if calls else finish
        yield _End(run.index, finish, prompt_tokens, completion, cached, calls)


async def _threaded(
    loaded: LoadedModel, produce: Callable[[], Iterator[Any]], cancelled: threading.Event
) -> AsyncIterator[Any]:
    """Run a blocking iterator in a thread; stop it when the client goes away."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, object]] = asyncio.Queue()

    def put(item: tuple[str, object]) -> None:
        if not cancelled.is_set():  # nobody reads once the request is gone: never block on a full queue
            loop.call_soon_threadsafe(queue.put_nowait, item)

    def worker() -> None:
        try:
            with loaded.engine():
                items = produce()
                try:
                    for item in items:
                        if cancelled.is_set():
                            break
                        put(("item", item))
                finally:
                    # Closed here, under the engine lock: left to the garbage collector, a stopped generation's
                    # cleanup ran in whatever thread collected it, beside the next request's engine call (segfault).
                    close = getattr(items, "close", None)
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
            yield value
    finally:
        cancelled.set()


def add_openai_routes(app: FastAPI, pool: ModelPool, config: DaemonConfig) -> None:
    metrics = pool.metrics

    async def complete(req: Request_, request: Request) -> Any:
        chat = isinstance(req, ChatRequest)
        head = shapes.Head(f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}", int(time.time()), req.model)
        cancelled = threading.Event()
        echo = {r.index: r.prompt or "" for r in _runs(req)} if isinstance(req, CompletionRequest) and req.echo else {}

        if req.stream:
            ctx = pool.use(req.model, client_gone(request))
            # admission errors (404, 429) surface before the stream starts; the wait for a slot is bounded
            loaded = await asyncio.wait_for(ctx.__aenter__(), timeout=config.request_timeout_s)
            try:  # refused before the stream starts, so the client gets a 400 rather than a broken stream
                refuse_without_grammar(loaded.name, loaded.variant.backend.value, loaded.session, req)
            except BaseException:
                await ctx.__aexit__(None, None, None)
                raise
            deadline = time.monotonic() + config.request_timeout_s
            stream = shapes.Stream(head, chat, req.include_usage(), req.alternatives() is not None, echo)

            async def events() -> AsyncIterator[str]:
                start, first, count = time.monotonic(), None, 0
                try:
                    # No per-token disconnect poll: Starlette cancels this generator when the client goes,
                    # and the finally below stops the engine thread (a poll per token cost ~5 % of decode speed).
                    async for event in _threaded(loaded, lambda: _events(loaded, req), cancelled):
                        if isinstance(event, _End):
                            yield stream.end(event.index, event.finish_reason, event.tool_calls)
                            stream.count(event.prompt_tokens, event.completion_tokens, event.cached_tokens)
                            count += event.completion_tokens
                        else:
                            if first is None:
                                first = time.monotonic() - start
                                metrics.observe("edge_time_to_first_token_seconds", first, model=req.model)
                            yield stream.piece(*event)
                        if time.monotonic() > deadline:  # the per-request timeout ends a stream too
                            message = f"the request took longer than {config.request_timeout_s:g} s"
                            yield f"data: {json.dumps({'error': {'message': message, 'type': 'timeout'}})}\n\n"
                            return
                    yield stream.usage_and_done()
                finally:
                    cancelled.set()
                    _record_speed(metrics, req.model, count, time.monotonic() - start)
                    await ctx.__aexit__(None, None, None)

            return StreamingResponse(events(), media_type="text/event-stream")

        answer = shapes.Answer(head, chat, req.alternatives() is not None, echo)

        async def generate() -> float:
            async with pool.use(req.model, client_gone(request)) as loaded:
                start = time.monotonic()
                async for event in _threaded(loaded, lambda: _events(loaded, req), cancelled):
                    if isinstance(event, _End):
                        answer.end(
                            event.index, event.finish_reason, event.prompt_tokens, event.completion_tokens,
                            event.cached_tokens, event.tool_calls,
                        )  # fmt: skip
                    else:
                        answer.piece(*event)
                return start

        # On timeout the generator's finally sets `cancelled`: the engine thread stops at its next token.
        start = await asyncio.wait_for(generate(), timeout=config.request_timeout_s)
        _record_speed(metrics, req.model, answer.completion_tokens, time.monotonic() - start)
        return answer.body()

    hybrid = app.state.hybrid = Hybrid(pool, config)
    app.router.on_shutdown.append(hybrid.aclose)

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest, request: Request) -> Any:
        messages = template_messages(body)  # for the router's token count: the tools described are tokens too
        ask = Ask(body.model, "/v1/chat/completions", body.stream, messages=messages, max_tokens=body.token_limit())
        return await hybrid.serve(request, ask, lambda: complete(body, request))

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request) -> Any:
        prompts = body.prompts()
        prompt, texts = (prompts[0], ()) if len(prompts) == 1 else (None, tuple(prompts))
        ask = Ask(body.model, "/v1/completions", body.stream, prompt=prompt, texts=texts, max_tokens=body.token_limit())
        return await hybrid.serve(request, ask, lambda: complete(body, request))

    @app.post("/v1/embeddings")
    async def embeddings(body: EmbeddingRequest, request: Request) -> Any:
        texts = body.bounded_texts(config.max_embedding_inputs)
        ask = Ask(body.model, "/v1/embeddings", texts=texts)
        return await hybrid.serve(request, ask, lambda: embed(body, texts, request))

    async def embed(body: EmbeddingRequest, texts: list[str], request: Request) -> dict[str, Any]:
        stop = threading.Event()

        def batches(loaded: LoadedModel) -> tuple[list[Any], int]:
            session: Any = loaded.session
            counter = getattr(session, "count_prompt_tokens", None)
            vectors: list[Any] = []
            tokens = 0

            def one(batch: list[str]) -> tuple[Any, int]:
                return session.embed(batch), sum(counter(prompt=t) for t in batch) if counter is not None else 0

            for at in range(0, len(texts), EMBED_BATCH):
                if stop.is_set():  # timed out: the engine is released after this batch
                    break
                batch_vectors, batch_tokens = loaded.call(functools.partial(one, texts[at : at + EMBED_BATCH]))
                vectors += list(batch_vectors)
                tokens += batch_tokens
            return vectors, tokens

        async def run() -> tuple[list[Any], int]:
            async with pool.use(body.model, client_gone(request), purpose="embed") as loaded:
                return await asyncio.to_thread(batches, loaded)

        try:
            vectors, tokens = await asyncio.wait_for(run(), timeout=config.request_timeout_s)
        finally:
            stop.set()
        return shapes.embeddings(body.model, vectors, tokens, body.encoding_format)


def _record_speed(metrics: Any, model: str, tokens: int, seconds: float) -> None:
    if tokens and seconds > 0:
        metrics.set("edge_tokens_per_second", tokens / seconds, model=model)
        metrics.inc("edge_generated_tokens_total", tokens, model=model)
