"""`edge-sdk cloud serve`'s settings, validated once at the boundary (light: the CLI reads its defaults)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge_sdk.apps.daemon.config import DaemonConfig
from edge_sdk.bundle.signing import TrustedKey
from edge_sdk.errors import ConfigError

__all__ = ["GatewayConfig", "gateway_config"]


class GatewayConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    devices: dict[str, str] = Field(min_length=1, description="device key -> device id")
    publishers: dict[str, str] = Field(default_factory=dict, description="publisher key -> publisher id")
    groups: dict[str, tuple[str, ...]] = Field(default_factory=dict, description="device id -> its groups")
    registry_dir: Path
    # PostgreSQL (postgresql://...) for every piece of gateway state, shared by replicas; None: SQLite files
    database_url: str | None = None
    telemetry_db: Path | None = None  # None: <registry_dir>/telemetry.sqlite3
    idempotency_db: Path | None = None  # None: <registry_dir>/idempotency.sqlite3
    rollouts_db: Path | None = None  # None: <registry_dir>/rollouts.sqlite3
    rollout_interval_s: float = Field(default=15.0, gt=0)  # how often running rollouts take their due decisions
    clock: Callable[[], float] = time.time  # rollouts' clock: tests walk through stage waits with their own
    trust: tuple[TrustedKey, ...] = ()  # non-empty: the registry accepts only bundles signed by these keys
    upstream_url: str | None = None
    upstream_api_key: str | None = None
    upstream_timeout_s: float = Field(default=300.0, gt=0)  # per try; the daemon's cloud_retries apply
    max_upload_bytes: int = Field(default=8 * 1024**3, gt=0)
    # How long an idempotency claim of a receiver on another host may go unrenewed before it is taken over (one of
    # this host that died is taken over at once).
    idempotency_lease_s: float = Field(default=300.0, gt=0)
    # host, port (8090: beside a device daemon on 8080) and limits of the OpenAI side (its api_keys stay empty)
    daemon: DaemonConfig = DaemonConfig(port=8090)


def gateway_config(**options: Any) -> GatewayConfig:
    """GatewayConfig, with a validation failure as a ConfigError naming the option and what is wrong."""
    try:
        return GatewayConfig(**options)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid gateway settings: {problems}") from None
