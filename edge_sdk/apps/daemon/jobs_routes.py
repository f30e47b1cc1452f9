"""`POST /v1/jobs`, `GET /v1/jobs` (a page), `GET /v1/jobs/{id}`: OpenAI requests that may wait, queued durably
and sent to the cloud.

A job is acknowledged (202) only once it is on disk; the delivery loop sends it when the cloud is
reachable, with its idempotency key, and the result is kept for `GET /v1/jobs/{id}`. The queue is opened
when the app is built (so a locked or unreadable queue stops the daemon at start, with the reason) and the
delivery and telemetry tasks run with the app's lifespan.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cloud_sync.queue_states import ItemKind, ItemState
from cloud_sync.router import PrivacyPolicy
from edge_sdk.apps.daemon.config import DaemonConfig
from edge_sdk.apps.daemon.openai_schema import ChatRequest, CompletionRequest, EmbeddingRequest
from edge_sdk.apps.daemon.pool import ModelPool
from edge_sdk.errors import IdempotencyKeyReusedError, QueueFullError, UnknownItemError, choices
from edge_sdk.metrics import Metrics

if TYPE_CHECKING:  # the queue and its delivery loop are imported when there is a cloud to deliver to
    from cloud_sync.delivery import DeliveryLoop
    from cloud_sync.queue import OfflineQueue

JOB_ENDPOINTS: dict[str, type[BaseModel]] = {
    "/v1/chat/completions": ChatRequest,
    "/v1/completions": CompletionRequest,
    "/v1/embeddings": EmbeddingRequest,
}


class JobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    endpoint: str
    body: dict[str, Any]
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=255)


@dataclass
class Jobs:
    queue: OfflineQueue
    cloud_url: str
    delivery: DeliveryLoop | None = None
    telemetry: asyncio.Task[None] | None = None


def _error(status: int, message: str, code: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def _invalid(job: JobRequest, max_bytes: int) -> str | None:
    """Why this job cannot be queued, or None."""
    if job.endpoint not in JOB_ENDPOINTS:
        return f"endpoint {job.endpoint!r} cannot be queued as a job; valid: {choices(JOB_ENDPOINTS)}"
    if job.body.get("stream"):
        return "a job cannot stream: set body.stream to false and read the result from GET /v1/jobs/{id}"
    size = len(json.dumps(job.body))
    if size > max_bytes:
        return f"the job body is {size} bytes, over the limit of {max_bytes} bytes"
    try:
        JOB_ENDPOINTS[job.endpoint].model_validate(job.body)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()[:5])
        return f"body is not a valid {job.endpoint} request: {problems}"
    return None


def _unavailable(config: DaemonConfig) -> str:
    if config.cloud_url is None:
        return "jobs are delivered to the cloud and this daemon has none: start it with --cloud-url"
    return "no offline queue is configured: start the daemon with --queue-path"


DEFAULT_PAGE, MAX_PAGE = 20, 100


def _states(given: list[str]) -> tuple[frozenset[ItemState] | None, str | None]:
    """The `state` filters of GET /v1/jobs, repeated or comma-separated; (None, None) for every state."""
    names = [n.strip() for text in given for n in text.split(",") if n.strip()]
    valid = {s.value for s in ItemState}
    unknown = [n for n in names if n not in valid]
    if unknown:
        return None, f"state {unknown[0]!r} is not one of: {choices(sorted(valid))}"
    return (frozenset(ItemState(n) for n in names) or None), None


def open_jobs(config: DaemonConfig) -> Jobs | None:
    if config.queue_path is None or config.cloud_url is None:
        return None
    from cloud_sync.queue import OfflineQueue

    queue = OfflineQueue(
        config.queue_path,
        max_items=config.queue_max_items,
        ttl_s=config.queue_ttl_s,
        telemetry_policy=config.queue_telemetry_policy,
    )
    return Jobs(queue, config.cloud_url)


def _start(jobs: Jobs, pool: ModelPool, config: DaemonConfig, metrics: Metrics, ready: Callable[[], bool]) -> None:
    from cloud_sync.delivery import DeliveryLoop, DeliveryPolicy
    from edge_sdk.apps.daemon.telemetry import telemetry_loop

    policy = DeliveryPolicy(
        concurrency=config.delivery_concurrency,
        base_backoff_s=min(0.5, config.delivery_max_backoff_s),
        max_backoff_s=config.delivery_max_backoff_s,
    )
    jobs.delivery = DeliveryLoop(
        jobs.queue, jobs.cloud_url, api_key=config.cloud_api_key, policy=policy, metrics=metrics
    )
    jobs.delivery.start()
    if config.telemetry_interval_s > 0:
        jobs.telemetry = asyncio.create_task(telemetry_loop(jobs.queue, jobs.delivery, pool, config, metrics, ready))


async def _stop(jobs: Jobs) -> None:
    if jobs.telemetry is not None:
        jobs.telemetry.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await jobs.telemetry
    if jobs.delivery is not None:
        await jobs.delivery.stop()
    jobs.queue.close()


def add_jobs_routes(app: FastAPI, pool: ModelPool, config: DaemonConfig) -> None:
    metrics = pool.metrics
    metrics.describe("edge_jobs_total", "counter", "POST /v1/jobs by outcome")
    metrics.describe("edge_queue_deliveries_total", "counter", "delivery attempts of queued items by outcome")
    metrics.describe("edge_offline_queue_items", "gauge", "items in the offline queue by state")
    metrics.describe("edge_telemetry_snapshots_total", "counter", "telemetry snapshots queued, or refused (full)")
    jobs = open_jobs(config)
    app.state.jobs = jobs
    privacy = PrivacyPolicy(config.local_only_models)
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(a: FastAPI) -> AsyncIterator[Any]:
        if jobs is not None:
            _start(jobs, pool, config, metrics, lambda: bool(getattr(a.state, "ready", True)))
        try:
            async with inner(a) as state:
                yield state
        finally:
            if jobs is not None:
                await _stop(jobs)

    app.router.lifespan_context = lifespan

    @app.post("/v1/jobs", status_code=202)
    async def submit(request: Request, job: JobRequest) -> JSONResponse:
        from cloud_sync.idempotency import MAX_KEY_LENGTH  # here: that module brings the database layer along

        if jobs is None:
            return _error(503, _unavailable(config), "no_queue")
        problem = _invalid(job, config.job_max_bytes)
        if problem:
            metrics.inc("edge_jobs_total", outcome="invalid")
            return _error(400, problem, "invalid_job")
        model = str(job.body.get("model"))
        if privacy.forbids_cloud(model):  # a job is delivered to the cloud: the policy must hold here too
            metrics.inc("edge_jobs_total", outcome="private")
            return _error(
                403,
                f"the privacy policy keeps {model!r} on this device (--privacy) and jobs are delivered to the "
                f"cloud: not queued; call {job.endpoint} directly to run it here",
                "privacy",
            )
        key = job.idempotency_key or request.headers.get("idempotency-key")
        if key is not None and not 0 < len(key) <= MAX_KEY_LENGTH:  # the receiver would refuse it at delivery
            message = f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters, got {len(key)}"
            return _error(400, message, "invalid_idempotency_key")
        try:
            item, created = await asyncio.to_thread(
                jobs.queue.enqueue, ItemKind.JOB, job.endpoint, job.body, idempotency_key=key
            )
        except QueueFullError as exc:
            metrics.inc("edge_jobs_total", outcome="queue_full")
            return _error(507, str(exc), "queue_full", {"Retry-After": f"{exc.retry_after_s:.0f}"})
        except IdempotencyKeyReusedError as exc:
            return _error(422, str(exc), "idempotency_key_reused")
        metrics.inc("edge_jobs_total", outcome="queued" if created else "duplicate")
        if created and jobs.delivery is not None:
            jobs.delivery.wake()
        return JSONResponse(
            item.public(), status_code=202 if created else 200, headers={"Location": f"/v1/jobs/{item.id}"}
        )

    @app.get("/v1/jobs")
    async def listing(request: Request) -> JSONResponse:
        """`?state=queued&state=failed` (or `state=queued,failed`), `?limit=1..100` (20), `?after=<job id>`."""
        if jobs is None:
            return _error(503, _unavailable(config), "no_queue")
        query = request.query_params
        states, problem = _states(query.getlist("state"))
        limit = query.get("limit", str(DEFAULT_PAGE))
        if problem is None and not (limit.isdigit() and 1 <= int(limit) <= MAX_PAGE):
            problem = f"limit must be an integer from 1 to {MAX_PAGE}, got {limit!r}"
        if problem is not None:
            return _error(400, problem, "invalid_query")
        try:
            page, more = await asyncio.to_thread(
                jobs.queue.list_items, ItemKind.JOB, states=states, limit=int(limit), after=query.get("after")
            )
        except UnknownItemError:
            return _error(400, f"after={query.get('after')!r} is not a job id of this device", "invalid_query")
        data = [item.public() for item in page]
        return JSONResponse(
            {
                "object": "list",
                "data": data,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
                "has_more": more,
            }
        )

    @app.get("/v1/jobs/{job_id}")
    async def status(job_id: str) -> JSONResponse:
        if jobs is None:
            return _error(503, _unavailable(config), "no_queue")
        try:
            item = await asyncio.to_thread(jobs.queue.get, job_id)
        except UnknownItemError:
            item = None
        if item is None or item.kind is not ItemKind.JOB:
            return _error(404, f"no job with id {job_id!r} on this device", "job_not_found")
        return JSONResponse(item.public())
