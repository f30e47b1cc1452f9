"""`GET /` at the gateway: the fleet page (edge_sdk.apps.pages.fleet), for publisher keys (the operators).

A device key is refused: a device may read its own telemetry, not the fleet's. Devices are the gateway's
device keys; what each runs comes from its last telemetry snapshot (edge_sdk.apps.daemon.telemetry), read
defensively: a device may send any JSON.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response

from cloud_sync.registry import Registry
from cloud_sync.rollouts import Rollouts
from cloud_sync.telemetry import TelemetryStore
from edge_sdk.apps.pages.fleet import BundleView, DeviceView, FleetStatus, RolloutView, fleet_page
from edge_sdk.apps.pages.keys import PageKeys, redact_keys_in_access_log

PAGE_PATHS = ("/",)  # the page checks its key itself (a cookie or a form): the gateway's DeviceAuth lets it by
TITLE = "edge-sdk fleet"


def add_fleet_routes(
    app: FastAPI,
    telemetry: TelemetryStore,
    registry: Registry,
    *,
    devices: Mapping[str, str],
    publishers: Collection[str],
    rollouts: Rollouts | None = None,
) -> None:
    """`devices`: device key -> device id; `publishers`: the keys that may open the page."""
    keys = PageKeys(
        "fleet",
        publishers,
        refused_why=lambda key: (
            "a device key cannot open the fleet page: give a publisher key" if key in devices else None
        ),
        unavailable=None
        if publishers
        else "the fleet page is for publisher keys, and this gateway has none: start it with --publisher-keys FILE",
    )
    device_ids = sorted(set(devices.values()))
    redact_keys_in_access_log()

    @app.api_route("/", methods=["GET", "POST"], include_in_schema=False, response_model=None)
    async def fleet(request: Request) -> Response:
        answer = await keys.login(request, TITLE)
        if answer is not None:
            return answer
        view = await asyncio.to_thread(gather, telemetry, registry, device_ids, rollouts)
        return HTMLResponse(fleet_page(view), headers={"Cache-Control": "no-store"})


def gather(
    telemetry: TelemetryStore, registry: Registry, device_ids: list[str], rollouts: Rollouts | None = None
) -> FleetStatus:
    reported = {device: (n, at, item) for device, n, at, item in telemetry.latest()}
    views: list[DeviceView] = []
    routes: dict[tuple[str, str], tuple[int, int]] = {}
    for device in sorted(set(device_ids) | set(reported)):
        if device not in reported:
            views.append(DeviceView(device))
            continue
        n, at, item = reported[device]
        views.append(device_view(device, n, at, item))
        for (route, reason), count in _route_counts(item).items():
            total, seen = routes.get((route, reason), (0, 0))
            routes[(route, reason)] = (total + count, seen + 1)
    bundles = [BundleView(e.name, e.version, e.size, e.signed, e.key_id, e.published_at) for e in registry.list(None)]
    staged = [
        RolloutView(r.id, r.spec.model, r.spec.version, r.spec.group, r.state.value, r.share, r.spec.stages,
                    r.healthy, r.members, r.reason)
        for r in (rollouts.list() if rollouts is not None else [])
    ]  # fmt: skip
    return FleetStatus(
        rollouts=staged,
        devices=views,
        routes=[(route, reason, total, seen) for (route, reason), (total, seen) in routes.items()],
        registry=bundles,
        now=time.time(),
    )


def device_view(device: str, snapshots: int, at: float, item: Any) -> DeviceView:
    """What a daemon's snapshot says, each field only when it has the shape a daemon sends."""
    item = item if isinstance(item, dict) else {}
    queue = item.get("queue") if isinstance(item.get("queue"), dict) else {}
    return DeviceView(
        id=device,
        last_at=at,
        snapshots=snapshots,
        host=_text(item.get("host")),
        sdk_version=_text(item.get("sdk")),
        models=_str_map(item.get("models")),
        variants=_str_map(item.get("variants")),
        routed=sum(_route_counts(item).values()),
        pending=sum(_int(queue.get(state)) for state in ("queued", "delivering")),
    )


def _route_counts(item: Any) -> dict[tuple[str, str], int]:
    series = (item.get("counters") or {}) if isinstance(item, dict) else {}
    found: dict[tuple[str, str], int] = {}
    for entry in series.get("edge_route_total", []) if isinstance(series, dict) else []:
        labels = entry.get("labels") if isinstance(entry, dict) else None
        if isinstance(labels, dict):
            key = (str(labels.get("route", "?"))[:32], str(labels.get("reason", "?"))[:32])
            found[key] = found.get(key, 0) + _int(entry.get("value"))
    return found


def _text(value: Any) -> str | None:
    return str(value)[:200] if isinstance(value, str | int | float) else None


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and value == value and abs(value) < 1e15 else 0


def _str_map(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(k)[:128]: str(v)[:64] for k, v in list(value.items())[:200] if v is not None}
