"""Text classification for bundles that carry a tokenizer: POST /v1/classify/{model}.

    {"input": "text" | ["text", ...]}  ->  {"object": "list", "model": ..., "data": [
        {"index": 0, "label": "positive", "score": 0.93, "scores": {"negative": 0.07, "positive": 0.93}}, ...],
        "usage": {"prompt_tokens": n, "total_tokens": n}}

Tokenized on the device (runtimes.text, the `tokenizers` package); /v1/embeddings serves embedding bundles the
same way, and /v1/infer still takes raw tensors.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field

from edge_sdk.apps.daemon.config import DaemonConfig
from edge_sdk.apps.daemon.gone import client_gone
from edge_sdk.apps.daemon.pool import ModelPool
from edge_sdk.errors import InputError, UnsupportedOperationError
from runtimes.text import TextSession

MAX_TEXTS = 256


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: str | list[str] = Field(description="one text or a list of texts")


def add_text_routes(app: FastAPI, pool: ModelPool, config: DaemonConfig) -> None:
    @app.post("/v1/classify/{model}")
    async def classify(model: str, body: ClassifyRequest, request: Request) -> dict[str, Any]:
        texts = [body.input] if isinstance(body.input, str) else body.input
        if not texts or len(texts) > MAX_TEXTS:
            raise InputError(f"input must hold 1 to {MAX_TEXTS} texts; it holds {len(texts)}")

        async def run() -> tuple[str, list[Any], int]:
            async with pool.use(model, client_gone(request)) as loaded:
                session = loaded.session
                if not isinstance(session, TextSession):
                    raise UnsupportedOperationError(
                        f"model {model!r} takes tensors, not text (its bundle carries no tokenizer): "
                        f"use /v1/infer/{model}"
                    )

                def work() -> tuple[list[Any], int]:
                    return session.classify(texts), session.count_tokens(texts)

                results, tokens = await asyncio.to_thread(loaded.call, work)
                return loaded.variant.id, results, tokens

        # The per-request timeout covers the wait for a slot too (as every route's).
        variant, results, tokens = await asyncio.wait_for(run(), timeout=config.request_timeout_s)
        data = [{"index": i, "label": r.label, "score": r.score, "scores": r.scores} for i, r in enumerate(results)]
        return {
            "object": "list",
            "model": model,
            "variant": variant,
            "data": data,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
