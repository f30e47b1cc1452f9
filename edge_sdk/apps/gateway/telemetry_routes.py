"""The gateway's telemetry routes over cloud_sync's TelemetryStore.

    POST /v1/telemetry   {"device": "<id>", "items": [{...}, ...]}   Idempotency-Key: <key>
                         -> 202 {"device", "accepted", "duplicate"}
    GET  /v1/telemetry   -> {"device": <caller>, "items": <stored for the caller>}

The device is the authenticated caller; a body naming another device is refused.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from cloud_sync.rollouts import Rollouts
from cloud_sync.telemetry import TelemetryBatch, TelemetryStore
from edge_sdk.apps.gateway.devices import caller_of
from edge_sdk.apps.gateway.rollout_routes import evaluate
from edge_sdk.metrics import Metrics

log = logging.getLogger("edge_sdk.rollout")


def _error(message: str, status: int) -> JSONResponse:
    kind = "permission_error" if status == 403 else "invalid_request_error"
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": None}}, status)


def add_telemetry_routes(
    app: FastAPI, store: TelemetryStore, metrics: Metrics, rollouts: Rollouts | None = None
) -> None:
    metrics.describe("edge_gateway_telemetry_items_total", "counter", "telemetry items stored, by device")
    metrics.describe(
        "edge_rollout_unexpected_reports_total", "counter", "devices reporting a version no rollout gave them"
    )

    @app.post("/v1/telemetry", status_code=202, response_model=None)
    async def receive(batch: TelemetryBatch, request: Request) -> dict[str, Any] | JSONResponse:
        caller = caller_of(request.scope)
        device = caller.id if caller else batch.device
        if device is None:
            return _error("telemetry needs a device: send 'device' or authenticate with a device key", 400)
        if batch.device is not None and batch.device != device:
            return _error(f"this key belongs to device {device!r}; it may not send telemetry for {batch.device!r}", 403)
        key = request.headers.get("idempotency-key")
        new = await asyncio.to_thread(store.record, device, batch.items, key)
        warnings: list[str] = []
        if new:
            metrics.inc("edge_gateway_telemetry_items_total", len(batch.items), device=device)
            if rollouts is not None:  # health reports of staged rollouts: a decision may be due now
                warnings = await asyncio.to_thread(rollouts.report, device, batch.items)
                for warning in warnings:
                    metrics.inc("edge_rollout_unexpected_reports_total", device=device)
                    log.warning(warning)
                await evaluate(rollouts, metrics)
        accepted = len(batch.items) if new else 0
        return {"device": device, "accepted": accepted, "duplicate": not new, "warnings": warnings}

    @app.get("/v1/telemetry", response_model=None)
    async def stored(request: Request) -> dict[str, Any] | JSONResponse:
        caller = caller_of(request.scope)
        if caller is None:
            return _error("authenticate with a device key to read its telemetry count", 400)
        return {"device": caller.id, "items": await asyncio.to_thread(store.count, caller.id)}
