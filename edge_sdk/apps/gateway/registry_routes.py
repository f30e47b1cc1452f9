"""HTTP routes of the bundle registry: publish (raw body, streamed to disk), list, download with Range.

POST /v1/registry/bundles[?hold=true]        body: the .edgebundle bytes  -> 201 new | 200 already there
GET  /v1/registry/bundles[?name=M]           -> {"object": "list", "data": [entry, ...], "withdrawn": [...]}
                                                (to a publisher also "held": [{"name", "version"}, ...])
GET  /v1/registry/bundles/{name}/{version}   -> the file; Range (206, Content-Range; 416 past the end),
                                                If-Range, ETag "<sha256>", Repr-Digest sha-256=:<b64>:

With rollouts, a device sees (and may download) a version under rollout only while a rollout offers it to
that device; `withdrawn` names the versions of aborted rollouts of its groups, which its sync rolls back from.
A version published with `hold=true` is offered to no device until a rollout opens it.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse

from cloud_sync.registry import REGISTRY_PREFIX, Registry
from cloud_sync.rollouts import Rollouts
from edge_sdk.apps.gateway.devices import DEVICE, caller_of
from edge_sdk.errors import PublishConflictError, RegistryError

PREFIX = REGISTRY_PREFIX
_FLUSH_BYTES = 1 << 20


def _error(message: str, kind: str, status: int) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": None}}, status)


def repr_digest(sha256_hex: str) -> str:
    """RFC 9530 Repr-Digest of the whole file (the same for every range of it)."""
    return f"sha-256=:{base64.b64encode(bytes.fromhex(sha256_hex)).decode()}:"


async def _receive_to(request: Request, path: Path, limit: int) -> int | None:
    """Stream the request body into `path`; the byte count, or None when it grew past `limit`."""
    size, buffered = 0, bytearray()
    with path.open("wb") as out:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                return None
            buffered += chunk
            if len(buffered) >= _FLUSH_BYTES:  # write in large pieces, off the event loop
                await asyncio.to_thread(out.write, bytes(buffered))
                buffered.clear()
        await asyncio.to_thread(out.write, bytes(buffered))
    return size


def _device(request: Request) -> str | None:
    """The calling device's id; None for publishers and unauthenticated calls (they see everything)."""
    caller = caller_of(request.scope)
    return caller.id if caller is not None and caller.role == DEVICE else None


def add_registry_routes(
    app: FastAPI,
    registry: Registry,
    *,
    may_publish: Callable[[Request], bool],
    max_upload_bytes: int,
    rollouts: Rollouts | None = None,
) -> None:
    @app.post(PREFIX)
    async def publish(request: Request, hold: bool = False) -> JSONResponse:
        if not may_publish(request):
            return _error(
                "this key may not publish: publishing needs a publisher key (the gateway's --publisher-keys file)",
                "permission_error",
                403,
            )
        if hold and rollouts is None:
            return _error("this registry has no rollouts, so it cannot hold a version", "invalid_request_error", 400)
        content_type = request.headers.get("content-type", "application/octet-stream")
        if content_type.startswith("multipart/"):
            return _error(
                "send the .edgebundle as the raw request body (Content-Type: application/octet-stream), "
                "not as a multipart form",
                "invalid_request_error",
                415,
            )
        upload = registry.incoming_file()
        try:
            size = await _receive_to(request, upload, max_upload_bytes)
            if size is None:
                return _error(
                    f"bundle is larger than the registry's limit of {max_upload_bytes} bytes",
                    "invalid_request_error",
                    413,
                )
            if size == 0:
                return _error("the request body is empty: send the .edgebundle bytes", "invalid_request_error", 400)
            before_listed = rollouts.hold if hold and rollouts is not None else None  # held from its first moment
            entry, new = await asyncio.to_thread(registry.publish, upload, before_listed=before_listed)
        except RegistryError as exc:
            status = 409 if isinstance(exc, PublishConflictError) else 422
            return _error(str(exc), "invalid_request_error", status)
        finally:
            upload.unlink(missing_ok=True)
        return JSONResponse(entry.to_json(), status_code=201 if new else 200)

    @app.get(PREFIX)
    async def listing(request: Request, name: str | None = None) -> dict[str, Any]:
        entries = await asyncio.to_thread(registry.list, name)
        device = _device(request)
        if rollouts is None or device is None:
            pairs = await asyncio.to_thread(rollouts.held) if rollouts is not None else []
            held = [{"name": n, "version": v} for n, v in pairs if name is None or n == name]
            return {"object": "list", "data": [e.to_json() for e in entries], "withdrawn": [], "held": held}
        seen = await asyncio.to_thread(rollouts.listing, device, [(e.name, e.version) for e in entries])
        shown = [e.to_json() for e in entries if (e.name, e.version) not in seen.hidden]
        return {"object": "list", "data": shown, "withdrawn": list(seen.withdrawn)}

    @app.get(PREFIX + "/{name}/{version}", response_model=None)
    async def download(name: str, version: str, request: Request) -> FileResponse | JSONResponse:
        try:
            entry = registry.entry(name, version)
        except RegistryError as exc:
            return _error(str(exc), "not_found_error", 404)
        device = _device(request)
        if rollouts is not None and device is not None:
            if not await asyncio.to_thread(rollouts.offered, device, name, version):
                message = f"{name} {version} is held for a staged rollout that does not include device {device!r} yet"
                return _error(message, "not_found_error", 404)
            await asyncio.to_thread(rollouts.given, device, name, version)
        path = registry.path_of(name, version)
        if not path.is_file():
            message = f"{name} {version} is in the registry's index but its file {str(path)!r} is missing"
            return _error(message + "; publish it again", "server_error", 500)
        headers = {"ETag": f'"{entry.sha256}"', "Repr-Digest": repr_digest(entry.sha256)}
        return FileResponse(
            path,
            headers=headers,
            media_type="application/octet-stream",
            filename=f"{name}-{version}.edgebundle",
        )
