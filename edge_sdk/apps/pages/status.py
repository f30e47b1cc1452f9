"""The daemon's status page: what runs on this device, why that variant, memory, routing, queue, cloud, errors."""

from __future__ import annotations

from dataclasses import dataclass, field

from device_profiles.fit import human as size
from edge_sdk.apps.pages.html import Html, ago, badge, document, esc, grid, pairs, paragraph, section, table, when
from edge_sdk.apps.pages.svg import PALETTE, Bar, bars, meter

REFRESH_S = 5
# What each route reason means (cloud_sync.router.Reason), as an operator reads it.
REASON_TEXT = {
    "default": "served here: installed, fits, within the context and the SLO",
    "not_installed": "the model is not on this device",
    "no_memory": "the model did not fit the free memory",
    "context": "the prompt was longer than the local context",
    "slo": "the expected queue wait was over the SLO",
    "overloaded": "the local queue was full",
    "local_failed": "the local engine failed before the first byte",
    "caller": "the caller asked for it (X-Edge-Route)",
    "privacy": "the privacy policy keeps the model here",
    "breaker_open": "the cloud kept failing (circuit breaker open)",
    "cloud_failed": "the cloud failed; the device answered instead",
    "no_cloud": "the cloud was asked for, but none is configured",
    "invalid": "refused before routing (malformed, wrong key, too large)",
}
ROUTE_COLOUR = {"local": PALETTE[1], "cloud": PALETTE[0], "reject": "#d73027"}
BREAKER_TONE = {"closed": "ok", "half_open": "warn", "open": "bad"}


@dataclass(frozen=True)
class ModelStatus:
    name: str
    version: str | None
    variant: str | None
    backend: str | None
    reason: str  # why this variant, or why none
    loaded: bool
    bytes: int | None  # what it costs the budget (loaded) or would (not loaded)
    running: int = 0
    waiting: int = 0


@dataclass(frozen=True)
class RecentError:
    at: float  # epoch seconds
    status: int
    request: str  # "POST /v1/chat/completions"
    message: str


@dataclass(frozen=True)
class DaemonStatus:
    host: str
    sdk_version: str
    state: str  # ready, loading, draining
    uptime_s: float
    profile: str
    models: list[ModelStatus]
    budget_bytes: int
    process_bytes: int | None
    available_bytes: int | None
    concurrency_per_model: int
    queue_per_model: int
    routes: list[tuple[str, str, int]]  # (route, reason, count)
    requests: dict[str, int] = field(default_factory=dict)  # status class ("2xx") -> count
    cloud_url: str | None = None
    breaker: str | None = None  # closed, half_open, open; None without a cloud
    offline_queue: dict[str, int] | None = None  # items by state; None without a queue
    errors: list[RecentError] = field(default_factory=list)
    now: float = 0.0

    @property
    def used_bytes(self) -> int:
        return sum(m.bytes or 0 for m in self.models if m.loaded)


def status_page(s: DaemonStatus) -> str:
    tone = {"ready": "ok", "loading": "warn"}.get(s.state, "bad")
    subtitle = f"{s.state} · edge-sdk {s.sdk_version} · up {ago(s.uptime_s).removesuffix(' ago')} · profile {s.profile}"
    head = paragraph(
        badge(s.state, tone),
        " ",
        f"{len(s.models)} model(s) installed, {sum(m.loaded for m in s.models)} loaded; ",
        f"{sum(c for _, _, c in s.routes)} routed request(s)",
    )
    return document(
        f"edge-sdk on {s.host}",
        [head, _models(s), grid(_memory(s), _routes(s)), grid(_queue(s), _cloud(s)), _errors(s)],
        subtitle=subtitle,
        refresh_s=REFRESH_S,
    )


def _models(s: DaemonStatus) -> Html:
    rows = []
    for m in s.models:
        state = badge("loaded", "ok") if m.loaded else badge("not loaded", "info")
        variant = Html(f"<code>{esc(m.variant)}</code>") if m.variant else badge("none", "bad")
        memory = (size(m.bytes) if m.loaded else f"{size(m.bytes)} once loaded") if m.bytes else None
        rows.append(
            [
                Html(f"<strong>{esc(m.name)}</strong>"),
                m.version,
                variant,
                m.backend,
                state,
                memory,
                f"{m.running} / {m.waiting}",
                m.reason,
            ]
        )
    headers = ["model", "version", "active variant", "engine", "state", "memory", "running / queued", "why"]
    return section("Models", table(headers, rows, numeric=(5, 6), empty="no bundle installed"), id="models")


def _memory(s: DaemonStatus) -> Html:
    loaded = [m for m in s.models if m.loaded and m.bytes]
    parts = [Bar(m.name, m.bytes or 0, size(m.bytes or 0), PALETTE[i % len(PALETTE)]) for i, m in enumerate(loaded)]
    over = s.used_bytes > s.budget_bytes
    chart = meter(parts, s.budget_bytes, total_text=f"budget {size(s.budget_bytes)}", width=520)
    facts = pairs(
        [
            ("budget for models", size(s.budget_bytes)),
            ("used by loaded models", Html(f"{esc(size(s.used_bytes))} {badge('over budget', 'bad') if over else ''}")),
            ("this process (resident)", size(s.process_bytes) if s.process_bytes else None),
            ("free on the machine", size(s.available_bytes) if s.available_bytes is not None else None),
        ]
    )
    note = paragraph("nothing loaded yet: a model loads on its first request", muted=True) if not loaded else ""
    return section("Memory", chart, note, facts, id="memory")


def _routes(s: DaemonStatus) -> Html:
    ordered = sorted(s.routes, key=lambda r: (-r[2], r[0], r[1]))
    chart = bars(
        [
            Bar(f"{route} · {reason}", n, colour=ROUTE_COLOUR.get(route, PALETTE[3]), note=REASON_TEXT.get(reason, ""))
            for route, reason, n in ordered
        ],
        width=520,
        label_width=190,
    )
    rows = [[route, reason, n, REASON_TEXT.get(reason, "")] for route, reason, n in ordered]
    served = ", ".join(f"{k}: {v}" for k, v in sorted(s.requests.items())) or "none yet"
    return section(
        "Routes",
        chart,
        table(["route", "reason", "requests", "meaning"], rows, numeric=(2,), empty="no request routed yet"),
        paragraph(f"API answers by status: {served}", muted=True),
        id="routes",
    )


def _queue(s: DaemonStatus) -> Html:
    rows = [[m.name, m.running, m.waiting] for m in s.models]
    limits = paragraph(
        f"per model: {s.concurrency_per_model} running at once, {s.queue_per_model} waiting; beyond, 429", muted=True
    )
    content: list[object] = [table(["model", "running", "queued"], rows, numeric=(1, 2)), limits]
    if s.offline_queue is not None:
        items = [(state, n) for state, n in s.offline_queue.items()]
        content += [Html("<h2>Offline queue</h2>"), pairs(items)]
    return section("Queue", *content, id="queue")


def _cloud(s: DaemonStatus) -> Html:
    if s.cloud_url is None:
        return section("Cloud", paragraph(badge("no cloud", "info"), " every request is served here"), id="cloud")
    state = s.breaker or "closed"
    return section(
        "Cloud",
        pairs(
            [
                ("target", Html(f"<code>{esc(s.cloud_url)}</code>")),
                ("circuit breaker", badge(state, BREAKER_TONE.get(state, "info"))),
            ]
        ),
        id="cloud",
    )


def _errors(s: DaemonStatus) -> Html:
    rows = [
        [Html(f'<span title="{esc(when(e.at))}">{esc(ago(max(0.0, s.now - e.at)))}</span>'), e.status,
         Html(f"<code>{esc(e.request)}</code>"), e.message]
        for e in reversed(s.errors)
    ]  # fmt: skip
    return section(
        "Recent errors",
        table(["when", "status", "request", "message"], rows, numeric=(1,), empty="no error since the start"),
        id="errors",
    )
