"""Whether a request's client is still there, answered without waiting.

BodyLimit (app.py) watches the connection once a body is read and sets the event under CLIENT_GONE in the
scope; Starlette's own `is_disconnected` cannot see through a BaseHTTPMiddleware, so it would say "still
there" to a client that left while its request waited.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request

CLIENT_GONE = "edge_sdk.client_gone"  # scope key: an asyncio.Event set when the client disconnects


def client_gone(request: Request) -> Callable[[], Awaitable[bool]]:
    """For ModelPool.use: asked once a slot is free, so a request nobody waits for is not started."""

    async def gone() -> bool:
        event = request.scope.get(CLIENT_GONE)
        return event is not None and event.is_set()

    return gone
