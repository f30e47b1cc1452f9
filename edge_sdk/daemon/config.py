"""Daemon settings, validated once at the boundary."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from cloud_sync.queue import CapPolicy


class DaemonConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"  # loopback unless the operator says otherwise
    port: int = Field(default=8080, ge=0, le=65535)
    api_keys: frozenset[str] = frozenset()  # empty: no auth (only sensible on loopback)
    max_body_bytes: int = Field(default=8 * 1024 * 1024, gt=0)
    concurrency_per_model: int = Field(default=2, gt=0)
    queue_per_model: int = Field(default=8, ge=0)
    request_timeout_s: float = Field(default=120.0, gt=0)
    drain_timeout_s: float = Field(default=10.0, ge=0)
    memory_budget_bytes: int | None = Field(default=None, gt=0, description="None: the host profile's budget")
    threads: int | None = Field(default=None, gt=0)

    # Offline queue, jobs and telemetry (cloud_sync/queue.py, cloud_sync/delivery.py, daemon/jobs_routes.py).
    # cloud_url / cloud_api_key: the same names the router uses; keep one copy of them when both land.
    cloud_url: str | None = None
    cloud_api_key: str | None = None
    queue_path: Path | None = None  # None: no queue, /v1/jobs answers 503
    queue_max_items: int = Field(default=10_000, gt=0)
    queue_ttl_s: float = Field(default=7 * 24 * 3600.0, gt=0)
    queue_telemetry_policy: CapPolicy = CapPolicy.DROP_OLDEST  # jobs are always reject-new
    job_max_bytes: int = Field(default=1024 * 1024, gt=0)
    delivery_concurrency: int = Field(default=4, gt=0)
    delivery_max_backoff_s: float = Field(default=60.0, gt=0)
    telemetry_interval_s: float = Field(default=60.0, ge=0)  # 0: no telemetry
    device_id: str | None = Field(default=None, min_length=1)  # None: the cloud knows the device by its key
