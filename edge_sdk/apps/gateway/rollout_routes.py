"""HTTP routes of staged rollouts and device groups (publisher keys only).

    POST /v1/rollouts                      {model, version, group, stages, min_healthy, stage_wait_s, seen_within_s,
                                            max_error_rate, max_fallback_rate}      -> 201 the rollout
    GET  /v1/rollouts                      every rollout, after taking the due decisions
    GET  /v1/rollouts/{id}                 one rollout and its decisions
    POST /v1/rollouts/{id}/{pause|resume|abort}   {"reason": "..."} optional
    GET  /v1/devices                       devices, their groups and when they were last seen
    PUT  /v1/devices/{id}/groups           {"groups": ["kitchen", ...]}  (overrides the key file's groups)

Every decision is logged (`edge_sdk.rollout`) and counted in `edge_rollout_decisions_total`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from cloud_sync.registry import Registry
from cloud_sync.rollout_rules import (
    DEFAULT_MAX_ERROR_RATE,
    DEFAULT_MAX_FALLBACK_RATE,
    DEFAULT_MIN_HEALTHY,
    DEFAULT_SEEN_WITHIN_S,
    DEFAULT_STAGE_WAIT_S,
    DEFAULT_STAGES,
    HealthBounds,
    RolloutError,
    RolloutSpec,
)
from cloud_sync.rollouts import Decision, RolloutConflictError, RolloutNotFoundError, Rollouts
from edge_sdk.apps.gateway.devices import PUBLISHER, caller_of, is_valid_id
from edge_sdk.metrics import Metrics

log = logging.getLogger("edge_sdk.rollout")


class RolloutRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1)
    version: str = Field(min_length=1)
    group: str = Field(min_length=1)
    stages: list[int] = Field(default_factory=lambda: list(DEFAULT_STAGES))
    min_healthy: float = DEFAULT_MIN_HEALTHY
    stage_wait_s: float = DEFAULT_STAGE_WAIT_S
    seen_within_s: float = DEFAULT_SEEN_WITHIN_S
    max_error_rate: float = DEFAULT_MAX_ERROR_RATE
    max_fallback_rate: float = DEFAULT_MAX_FALLBACK_RATE

    def spec(self) -> RolloutSpec:
        return RolloutSpec(
            model=self.model,
            version=self.version,
            group=self.group,
            stages=tuple(self.stages),
            min_healthy=self.min_healthy,
            stage_wait_s=self.stage_wait_s,
            seen_within_s=self.seen_within_s,
            bounds=HealthBounds(self.max_error_rate, self.max_fallback_rate),
        )


class ControlRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = ""


class GroupsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    groups: list[str]


def _error(message: str, status: int) -> JSONResponse:
    kind = {403: "permission_error", 404: "not_found_error", 409: "conflict_error"}.get(status, "invalid_request_error")
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": None}}, status)


def _status(exc: RolloutError) -> int:
    if isinstance(exc, RolloutNotFoundError):
        return 404
    return 409 if isinstance(exc, RolloutConflictError) else 400


def announce(decisions: list[Decision], metrics: Metrics) -> None:
    """Log and count decisions (every place that takes one calls this)."""
    for d in decisions:
        metrics.inc("edge_rollout_decisions_total", model=d.model, action=d.action)
        metrics.set("edge_rollout_stage_percent", d.stage_percent, rollout=str(d.rollout), model=d.model, group=d.group)
        log.info(
            "rollout %d %s to %s: %s at %d%%: %s", d.rollout, d.model, d.group, d.action, d.stage_percent, d.reason
        )


async def evaluate(rollouts: Rollouts, metrics: Metrics) -> None:
    announce(await asyncio.to_thread(rollouts.evaluate), metrics)


def add_rollout_routes(app: FastAPI, rollouts: Rollouts, registry: Registry, metrics: Metrics) -> None:
    metrics.describe("edge_rollout_decisions_total", "counter", "rollout decisions by model and action")
    metrics.describe("edge_rollout_stage_percent", "gauge", "the share of its group a rollout is open to")

    def refusal(request: Request) -> JSONResponse | None:
        caller = caller_of(request.scope)
        if caller is None or caller.role != PUBLISHER:
            return _error("rollouts and device groups need a publisher key (the gateway's --publisher-keys)", 403)
        return None

    @app.post("/v1/rollouts", status_code=201, response_model=None)
    async def start(body: RolloutRequest, request: Request) -> dict[str, Any] | JSONResponse:
        if (refused := refusal(request)) is not None:
            return refused
        published = [(e.name, e.version) for e in await asyncio.to_thread(registry.list)]
        try:
            rollout, decision = await asyncio.to_thread(rollouts.start, body.spec(), published)
        except RolloutError as exc:
            return _error(str(exc), _status(exc))
        announce([decision], metrics)
        return rollout.to_json()

    @app.get("/v1/rollouts", response_model=None)
    async def listing(request: Request) -> dict[str, Any] | JSONResponse:
        if (refused := refusal(request)) is not None:
            return refused
        await evaluate(rollouts, metrics)
        return {"object": "list", "data": [r.to_json() for r in await asyncio.to_thread(rollouts.list)]}

    @app.get("/v1/rollouts/{rollout_id}", response_model=None)
    async def one(rollout_id: int, request: Request) -> dict[str, Any] | JSONResponse:
        if (refused := refusal(request)) is not None:
            return refused
        await evaluate(rollouts, metrics)
        try:
            rollout = await asyncio.to_thread(rollouts.get, rollout_id)
        except RolloutError as exc:
            return _error(str(exc), _status(exc))
        return rollout.to_json() | {"decisions": await asyncio.to_thread(rollouts.decisions, rollout_id)}

    @app.post("/v1/rollouts/{rollout_id}/{action}", response_model=None)
    async def control(
        rollout_id: int, action: str, request: Request, body: ControlRequest | None = None
    ) -> dict[str, Any] | JSONResponse:
        if (refused := refusal(request)) is not None:
            return refused
        try:
            rollout, decision = await asyncio.to_thread(
                rollouts.control, rollout_id, action, body.reason if body else ""
            )
        except RolloutError as exc:
            return _error(str(exc), _status(exc))
        announce([decision], metrics)
        return rollout.to_json()

    @app.get("/v1/devices", response_model=None)
    async def devices(request: Request) -> dict[str, Any] | JSONResponse:
        if (refused := refusal(request)) is not None:
            return refused
        return {"object": "list", "data": await asyncio.to_thread(rollouts.fleet)}

    @app.put("/v1/devices/{device}/groups", response_model=None)
    async def set_groups(device: str, body: GroupsRequest, request: Request) -> dict[str, Any] | JSONResponse:
        if (refused := refusal(request)) is not None:
            return refused
        if bad := [g for g in body.groups if not is_valid_id(g)]:
            return _error(f"group {bad[0]!r} must be letters, digits, '.', '_', ':' or '-'", 400)
        try:
            groups = await asyncio.to_thread(rollouts.set_groups, device, body.groups)
        except RolloutError as exc:
            return _error(str(exc), _status(exc))
        log.info("device %s groups set to %s", device, ",".join(groups) or "(none)")
        return {"id": device, "groups": list(groups)}
