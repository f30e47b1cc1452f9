"""A receiver for queued work that counts how often each Idempotency-Key really executed.

It mounts `cloud_sync.idempotency.IdempotencyMiddleware` exactly as the gateway does. Used in-process
(`serving(make_app(...))`) and as a separate process (`python receiver_app.py --port N --db PATH`), so the
tests can start it late (the cloud was down) and kill the device side, not the receiver.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from cloud_sync.idempotency import IdempotencyMiddleware, IdempotencyStore


def make_app(db: str | Path, *, delay_s: float = 0.0, wait_s: float = 10.0, lease_s: float = 300.0) -> FastAPI:
    app = FastAPI()
    executions: Counter[str] = Counter()
    telemetry_bodies: list[dict] = []
    app.state.store = IdempotencyStore(db, lease_s=lease_s)
    app.add_middleware(IdempotencyMiddleware, store=app.state.store, wait_s=wait_s)

    async def execute(request: Request, what: str) -> JSONResponse:
        key = request.headers.get("idempotency-key", "")
        executions[key] += 1  # counted before the work, so an execution cut short still shows
        body = await request.json()
        await asyncio.sleep(delay_s)
        if body.get("fail") == "bad-request":
            return JSONResponse({"error": {"message": "the model 'nope' does not exist"}}, status_code=400)
        if body.get("fail") == "slow-down" and executions[key] == 1:
            return JSONResponse({"error": {"message": "rate limited"}}, status_code=429, headers={"Retry-After": "2"})
        if body.get("fail") == "proxy-list" and executions[key] == 1:  # a proxy's error that is JSON, not a dict
            return JSONResponse(["bad gateway"], status_code=502)
        if body.get("fail") == "unavailable" and executions[key] == 1:
            return JSONResponse({"error": {"message": "busy"}}, status_code=503, headers={"Retry-After": "0"})
        return JSONResponse({"object": what, "key": key, "model": body.get("model"), "n": executions[key]})

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> JSONResponse:
        return await execute(request, "chat.completion")

    @app.post("/v1/completions")
    async def completions(request: Request) -> JSONResponse:
        return await execute(request, "text_completion")

    @app.post("/v1/telemetry")
    async def telemetry(request: Request) -> JSONResponse:
        telemetry_bodies.append(await request.json())
        return await execute(request, "telemetry")

    @app.get("/telemetry")
    async def received() -> list[dict]:
        return telemetry_bodies

    @app.get("/executions")
    async def counts() -> dict[str, int]:
        return dict(executions)

    return app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_live(url: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{url}/executions", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise TimeoutError(f"receiver at {url} did not come up in {timeout_s} s")


@contextmanager
def serving(app: FastAPI, port: int | None = None) -> Iterator[str]:
    """A real uvicorn server on loopback, in a thread."""
    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    wait_live(url)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--db", required=True, help="a SQLite file or a postgresql:// URL")
    parser.add_argument("--delay-ms", type=float, default=0.0)
    args = parser.parse_args()
    uvicorn.run(make_app(args.db, delay_s=args.delay_ms / 1000), host="127.0.0.1", port=args.port, log_level="warning")
