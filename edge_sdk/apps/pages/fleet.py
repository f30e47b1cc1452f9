"""The gateway's fleet page: the devices, what each runs and when it last reported, routing across the fleet,
and what the registry holds."""

from __future__ import annotations

from dataclasses import dataclass, field

from device_profiles.fit import human as size
from edge_sdk.apps.pages.html import Html, ago, badge, document, esc, grid, join, paragraph, section, table, when
from edge_sdk.apps.pages.status import REASON_TEXT, ROUTE_COLOUR
from edge_sdk.apps.pages.svg import PALETTE, Bar, bars

REFRESH_S = 15
STALE_S = 600.0  # a device silent this long is marked stale (telemetry comes every minute by default)


@dataclass(frozen=True)
class DeviceView:
    id: str
    last_at: float | None = None  # when its last telemetry arrived (epoch s); None: never
    snapshots: int = 0
    host: str | None = None
    sdk_version: str | None = None
    models: dict[str, str] = field(default_factory=dict)  # name -> version installed
    variants: dict[str, str] = field(default_factory=dict)  # name -> variant loaded
    routed: int = 0  # requests routed since the daemon started (its last snapshot)
    pending: int = 0  # items in its offline queue not yet delivered


@dataclass(frozen=True)
class BundleView:
    name: str
    version: str
    size: int
    signed: bool
    key_id: str | None
    published_at: float


@dataclass(frozen=True)
class RolloutView:
    id: int
    model: str
    version: str
    group: str
    state: str  # running, paused, completed, aborted
    stage_percent: int
    stages: tuple[int, ...]
    healthy: int
    members: int
    reason: str


@dataclass(frozen=True)
class FleetStatus:
    devices: list[DeviceView]
    routes: list[tuple[str, str, int, int]]  # (route, reason, requests, devices)
    registry: list[BundleView]
    now: float
    rollouts: list[RolloutView] = field(default_factory=list)


def fleet_page(f: FleetStatus) -> str:
    reporting = [d for d in f.devices if d.last_at is not None]
    subtitle = (
        f"{len(f.devices)} device(s), {len(reporting)} reporting · {len(f.registry)} bundle version(s) in the registry"
    )
    return document(
        "edge-sdk fleet",
        [_devices(f), grid(_routes(f), _versions(f)), _rollouts(f), _registry(f)],
        subtitle=subtitle,
        refresh_s=REFRESH_S,
    )


def _devices(f: FleetStatus) -> Html:
    rows: list[list[object]] = []
    dim: list[int] = []
    for i, d in enumerate(sorted(f.devices, key=lambda d: (d.last_at is None, d.id))):
        if d.last_at is None:
            rows.append(
                [
                    Html(f"<strong>{esc(d.id)}</strong>"),
                    None,
                    badge("never reported", "info"),
                    0,
                    None,
                    None,
                    None,
                    None,
                ]
            )
            dim.append(i)
            continue
        age = f.now - d.last_at
        seen = join([ago(age), " ", badge("stale", "warn") if age > STALE_S else ""])
        models = join(
            [
                join(
                    [
                        Html("<code>"),
                        name,
                        " ",
                        version,
                        Html("</code>"),
                        f" ({d.variants[name]})" if name in d.variants else "",
                    ]
                )
                for name, version in sorted(d.models.items())
            ],
            "<br>",
        )
        rows.append(
            [
                Html(f"<strong>{esc(d.id)}</strong>"),
                d.host,
                Html(f'<span title="{esc(when(d.last_at))}">{seen}</span>'),
                d.snapshots,
                d.sdk_version,
                models or None,
                d.routed,
                d.pending,
            ]
        )
    headers = [
        "device",
        "host",
        "last telemetry",
        "snapshots",
        "edge-sdk",
        "models (variant loaded)",
        "routed",
        "queued offline",
    ]
    return section("Devices", table(headers, rows, numeric=(3, 6, 7), dim=dim, empty="no device key"), id="devices")


def _routes(f: FleetStatus) -> Html:
    ordered = sorted(f.routes, key=lambda r: (-r[2], r[0], r[1]))
    chart = bars(
        [
            Bar(
                f"{route} · {reason}",
                n,
                colour=ROUTE_COLOUR.get(route, PALETTE[3]),
                note=f"{REASON_TEXT.get(reason, '')}; from {devices} device(s)",
            )
            for route, reason, n, devices in ordered
        ],
        width=540,
        label_width=190,
    )
    rows = [[route, reason, n, devices, REASON_TEXT.get(reason, "")] for route, reason, n, devices in ordered]
    return section(
        "Route reasons across the fleet",
        chart,
        table(["route", "reason", "requests", "devices", "meaning"], rows, numeric=(2, 3), empty="no request yet"),
        paragraph("from each device's last snapshot: counts since its daemon started", muted=True),
        id="routes",
    )


def _versions(f: FleetStatus) -> Html:
    """Which version of each model runs on how many devices: a rollout in progress shows as two rows."""
    count: dict[tuple[str, str], list[str]] = {}
    for d in f.devices:
        for name, version in d.models.items():
            count.setdefault((name, version), []).append(d.id)
    rows = [[name, version, len(ids), ", ".join(sorted(ids))] for (name, version), ids in sorted(count.items())]
    return section(
        "Model versions",
        table(["model", "version", "devices", "which"], rows, numeric=(2,), empty="no device has reported a model"),
        id="versions",
    )


def _registry(f: FleetStatus) -> Html:
    rows = [
        [
            Html(f"<strong>{esc(b.name)}</strong>"),
            b.version,
            size(b.size),
            badge(f"signed {b.key_id or ''}".strip(), "ok") if b.signed else badge("unsigned", "warn"),
            when(b.published_at),
        ]
        for b in sorted(f.registry, key=lambda b: (b.name, b.published_at))
    ]
    headers = ["bundle", "version", "size", "signature", "published"]
    return section("Registry", table(headers, rows, numeric=(2,), empty="nothing published"), id="registry")


_STATE_TONE = {"running": "info", "paused": "warn", "completed": "ok", "aborted": "bad"}


def _rollouts(f: FleetStatus) -> Html:
    rows = [
        [
            str(r.id),
            Html(f"<strong>{esc(r.model)}</strong> {esc(r.version)}"),
            r.group,
            badge(r.state, _STATE_TONE.get(r.state, "info")),
            f"{r.stage_percent}% of " + ",".join(str(s) for s in r.stages),
            f"{r.healthy}/{r.members}",
            r.reason,
        ]
        for r in sorted(f.rollouts, key=lambda r: -r.id)
    ]
    headers = ["id", "version", "group", "state", "stage", "healthy", "why"]
    return section("Rollouts", table(headers, rows, empty="no staged rollouts"), id="rollouts")
