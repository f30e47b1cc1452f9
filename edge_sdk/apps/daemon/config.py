"""Daemon settings, validated once at the boundary."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cloud_sync.queue_states import CapPolicy
from edge_sdk.apps.daemon.logs import LogFormat, LogLevel
from edge_sdk.errors import ConfigError


class DaemonConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"  # loopback unless the operator says otherwise
    port: int = Field(default=8080, ge=0, le=65535)
    api_keys: frozenset[str] = frozenset()  # empty: no auth (only sensible on loopback)
    max_body_bytes: int = Field(default=8 * 1024 * 1024, gt=0)
    concurrency_per_model: int = Field(default=2, gt=0)
    queue_per_model: int = Field(default=8, ge=0)
    request_timeout_s: float = Field(default=120.0, gt=0)  # every route: queue wait + engine time
    # Bounds on what one client can hold: a slow client cannot keep a connection, a big request cannot keep a model.
    header_timeout_s: float = Field(default=10.0, gt=0, description="from a connection's first byte to its headers")
    body_timeout_s: float = Field(default=30.0, gt=0, description="longest wait for the next chunk of a body")
    max_connections: int = Field(default=512, gt=0, description="beyond: 503 (uvicorn's limit_concurrency)")
    max_embedding_inputs: int = Field(default=256, gt=0, description="texts per /v1/embeddings request")
    allow_nonfinite: bool = False  # NaN/Infinity in tensor inputs: 422 unless allowed
    drain_timeout_s: float = Field(default=10.0, ge=0)
    memory_budget_bytes: int | None = Field(default=None, gt=0, description="None: the host profile's budget")
    threads: int | None = Field(default=None, gt=0)
    context: int | None = Field(default=None, ge=16, description="LLM context in tokens; None: the engine's default")
    # Which variant of each bundle to serve: by default the best for this profile (an id or a YAML path; None:
    # the detected host); `variants` pins some: model name -> variant id ("*": every model).
    profile: str | None = None
    variants: dict[str, str] = Field(default_factory=dict)
    chat_template: str | None = Field(default=None, repr=False, description="for every LLM: replaces the bundle's")
    # Language models: RAM for states of earlier prompts (0: every prompt evaluated whole) and drafting.
    prompt_cache_mb: int = Field(default=64, ge=0, description="states of earlier prompts kept per LLM, MiB")
    speculative: Literal["prompt-lookup"] | None = None
    draft_tokens: int = Field(default=8, ge=1, le=64, description="most tokens drafted per step")
    # Load the served models at start (those that fit the budget and free memory); /health/ready waits for them.
    preload: bool = Field(default=True, description="load served models at start; ready once they are loaded")

    # --- hybrid routing: the cloud target and when to use it (cloud_sync.router) ---
    cloud_url: str | None = Field(default=None, pattern=r"^https?://", description="None: everything stays local")
    cloud_api_key: str | None = Field(default=None, repr=False)  # this device's key at the cloud
    cloud_timeout_s: float = Field(default=60.0, gt=0)
    cloud_retries: int = Field(default=2, ge=0, description="retries after the first try, before the first byte")
    breaker_failures: int = Field(default=5, ge=1, description="failures in a row that open the circuit breaker")
    breaker_reset_s: float = Field(default=30.0, gt=0, description="seconds open before a trial request")
    slo_ms: float | None = Field(default=None, gt=0, description="estimated queue wait beyond which to go to the cloud")
    local_only_models: frozenset[str] = frozenset()  # never sent to the cloud; "all" for every model

    # Offline queue, jobs and telemetry (cloud_sync/queue.py, cloud_sync/delivery.py, daemon/jobs_routes.py).
    queue_path: Path | None = None  # None: no queue, /v1/jobs answers 503
    queue_max_items: int = Field(default=10_000, gt=0)
    queue_ttl_s: float = Field(default=7 * 24 * 3600.0, gt=0)
    queue_telemetry_policy: CapPolicy = CapPolicy.DROP_OLDEST  # jobs are always reject-new
    job_max_bytes: int = Field(default=1024 * 1024, gt=0)
    delivery_concurrency: int = Field(default=4, gt=0)
    delivery_max_backoff_s: float = Field(default=60.0, gt=0)
    telemetry_interval_s: float = Field(default=60.0, ge=0)  # 0: no telemetry
    device_id: str | None = Field(default=None, min_length=1)  # None: the cloud knows the device by its key

    # Logs (daemon/logs.py): one line per route decision and per delivery attempt; json for log collectors.
    log_level: LogLevel = "info"
    log_format: LogFormat = "text"


def daemon_config(**options: Any) -> DaemonConfig:
    """DaemonConfig, with a validation failure as a ConfigError naming the option and what is wrong."""
    try:
        return DaemonConfig(**options)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid daemon settings: {problems}") from None


def read_api_keys(path: Path) -> frozenset[str]:
    """One key a line; blank lines and '#' comments ignored."""
    if not path.is_file():
        raise ConfigError(f"API key file {str(path)!r} does not exist")
    keys = frozenset(
        line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")
    )
    if not keys:
        raise ConfigError(f"API key file {str(path)!r} holds no key")
    return keys


def read_cloud_key(path: Path) -> str:
    """This device's key at the cloud: the file's one key (same format as an API key file)."""
    keys = read_api_keys(path)
    if len(keys) != 1:
        raise ConfigError(f"cloud key file {str(path)!r} must hold exactly one key; it holds {len(keys)}")
    return next(iter(keys))
