"""The daemon's telemetry: every N seconds a snapshot goes into the offline queue, for `/v1/telemetry`.

Queued like a job (durable, idempotency key, TTL), so snapshots taken while offline arrive later; when the
queue is full the oldest snapshot is dropped (`--telemetry-policy drop-oldest`, the default) and marked so.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

from cloud_sync.delivery import DeliveryLoop
from cloud_sync.queue import ItemKind, OfflineQueue
from edge_sdk.apps.daemon.config import DaemonConfig
from edge_sdk.apps.daemon.pool import ModelPool
from edge_sdk.errors import QueueFullError
from edge_sdk.metrics import Metrics
from edge_sdk.version import __version__

TELEMETRY_ENDPOINT = "/v1/telemetry"
log = logging.getLogger("edge_sdk.telemetry")


def snapshot(queue: OfflineQueue, pool: ModelPool, metrics: Metrics, ready: bool = True) -> dict[str, Any]:
    """Counters (requests, route decisions, deliveries, ...), model versions and variants loaded, readiness, queue
    states, the SDK's version: what the gateway's fleet page shows of this device. A staged rollout at the gateway
    judges a device's health from the versions, `ready`, and the request, 5xx and cloud-route counters
    (cloud_sync/rollouts.py)."""
    return {
        "at": time.time(),
        "host": socket.gethostname(),
        "sdk": __version__,
        "ready": ready,
        "models": {name: pool.source.current_version(name) for name in pool.source.names()},
        "loaded": sorted(m.name for m in pool.loaded()),
        "variants": {m.name: m.variant.id for m in pool.loaded()},
        "counters": metrics.counters(),
        "queue": queue.counts(),
    }


def enqueue_snapshot(
    queue: OfflineQueue, pool: ModelPool, metrics: Metrics, device_id: str | None, ready: bool = True
) -> bool:
    body = {"device": device_id, "items": [snapshot(queue, pool, metrics, ready)]}
    try:
        queue.enqueue(ItemKind.TELEMETRY, TELEMETRY_ENDPOINT, body, idempotency_key=f"telemetry-{uuid.uuid4().hex}")
    except QueueFullError:
        metrics.inc("edge_telemetry_snapshots_total", outcome="queue_full")
        return False
    metrics.inc("edge_telemetry_snapshots_total", outcome="queued")
    return True


async def telemetry_loop(
    queue: OfflineQueue,
    delivery: DeliveryLoop,
    pool: ModelPool,
    config: DaemonConfig,
    metrics: Metrics,
    ready: Callable[[], bool] = lambda: True,
) -> None:
    while True:
        await asyncio.sleep(config.telemetry_interval_s)
        try:
            if await asyncio.to_thread(enqueue_snapshot, queue, pool, metrics, config.device_id, ready()):
                delivery.wake()
        except Exception as exc:  # a full disk, a broken bundle source: this snapshot is lost, the next one tries
            metrics.inc("edge_telemetry_snapshots_total", outcome="failed")
            log.warning("telemetry snapshot failed: %s: %s", type(exc).__name__, exc)
