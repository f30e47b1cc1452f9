"""The delivery loop: sends due queue items to the cloud, durably retried with backoff.

Each attempt is one `POST {cloud_url}{endpoint}` carrying the item's `Idempotency-Key`; the retries live in
the queue (next attempt time, attempts), so they survive restarts. Outcomes:

- 2xx: `done`, the response body kept as the item's result;
- 408, 409 (the receiver is still executing the same key), 425, 429, 5xx, no connection, timeout:
  back to `queued`, due after exponential backoff with jitter, or after `Retry-After` when the cloud says so;
- 401 (the cloud does not know this device's key): back to `queued`, and the loop pauses as when offline —
  the device's configuration is at fault, not the job, and the job must survive until it is fixed;
- any other status: `failed`, with the cloud's error message kept (retrying cannot help).

While the cloud is unreachable the loop pauses as a whole (backoff on consecutive failures) and then
probes with a single item, instead of walking every queued item into a refused connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cloud_sync import http
from cloud_sync.queue import ItemState, OfflineQueue, Outcome, QueueItem
from cloud_sync.retry import RetryPolicy, parse_retry_after

if TYPE_CHECKING:
    import httpx  # imported when a request is made: a daemon without a cloud never pays its ~50 ms at start

    from edge_sdk.metrics import Metrics

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({408, 409, 425, 429})
ROUND_PER_SLOT = 4


@dataclass(frozen=True)
class DeliveryPolicy:
    concurrency: int = 4  # requests in flight to the cloud at once
    base_backoff_s: float = 0.5
    max_backoff_s: float = 60.0
    timeout_s: float = 120.0  # one attempt (a language model in the cloud may take a while)
    idle_poll_s: float = 5.0  # longest sleep when nothing is due (new items wake the loop at once)
    expire_every_s: float = 5.0

    def retry(self) -> RetryPolicy:
        # retries live on disk (one HTTP attempt per try): only the delays come from the policy
        return RetryPolicy(base_delay_s=self.base_backoff_s, max_delay_s=self.max_backoff_s, jitter=0.5)


def backoff_s(attempt: int, policy: DeliveryPolicy) -> float:
    """Exponential in the attempt number, capped, with jitter so retries of many items spread out (the one
    retry policy of cloud_sync, with the delivery's own base and cap)."""
    return policy.retry().backoff(max(attempt - 1, 0))


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}: {response.text[:500]}"
    if not isinstance(body, dict):  # a proxy's JSON list or string
        return f"HTTP {response.status_code}: {str(body)[:500]}"
    error = body.get("error")
    message = error.get("message") if isinstance(error, dict) else (error or body.get("detail"))
    return f"HTTP {response.status_code}: {message or str(body)[:500]}"


def _result(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return {"text": response.text}


class DeliveryLoop:
    """Start with `start()` inside a running event loop (the daemon's lifespan); `stop()` cancels cleanly.

    A delivery interrupted by `stop()` (or a crash) leaves its item `delivering`; the next open of the
    queue puts it back to queued, and the receiver's idempotency store answers a repeat without executing.
    """

    def __init__(
        self,
        queue: OfflineQueue,
        cloud_url: str,
        *,
        api_key: str | None = None,
        policy: DeliveryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.queue, self.policy, self.metrics = queue, policy or DeliveryPolicy(), metrics
        self._client = http.async_client(
            cloud_url, api_key=api_key, timeout_s=self.policy.timeout_s, transport=transport
        )
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._offline_failures = 0  # consecutive rounds that could not reach the cloud
        self._answered = False  # the last attempt got an HTTP answer
        self._paused_until = 0.0
        self._last_expire = 0.0

    def wake(self) -> None:
        """Something new was queued: look now instead of at the next poll."""
        self._wake.set()

    @property
    def cloud_reachable(self) -> bool:
        return self._answered

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="edge-sdk-delivery")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._client.aclose()

    async def _run(self) -> None:
        while True:
            try:
                delivered = await self.run_once()
                if delivered == 0:
                    await self._sleep(await self._idle_wait())
            except (OSError, sqlite3.Error) as exc:  # a full disk, say: keep the daemon up, try again later
                log.error("delivery round failed, retrying in %.0f s: %s", self.policy.idle_poll_s, exc)
                await self._sleep(self.policy.idle_poll_s)

    async def run_once(self) -> int:
        """One round: expire what is past its TTL, claim due items (one while offline), deliver them."""
        self._wake.clear()  # a wake() from here on is seen by the next sleep
        now = time.time()
        if now - self._last_expire >= self.policy.expire_every_s:
            self._last_expire = now
            await asyncio.to_thread(self._housekeeping)
        if now < self._paused_until:
            return 0
        # A round claims a few items per slot: two commits (claim, settle) for the round instead of two an item.
        # Until the cloud has answered (at start, after a failure) one item probes it.
        limit = self.policy.concurrency * ROUND_PER_SLOT if self.cloud_reachable else 1
        items = await asyncio.to_thread(self.queue.claim_due, limit)
        if items:
            slots = asyncio.Semaphore(self.policy.concurrency)

            async def deliver(item: QueueItem) -> Outcome:
                async with slots:
                    try:
                        return await self._deliver(item)
                    except Exception as exc:  # a surprise must not strand the round `delivering` or end the loop
                        log.exception("delivering %s failed unexpectedly; it is retried", item.id)
                        error = f"delivery failed: {type(exc).__name__}: {exc}"
                        return Outcome(
                            item.id, ItemState.QUEUED, error=error, delay_s=backoff_s(item.attempts, self.policy)
                        )

            outcomes = await asyncio.gather(*(deliver(item) for item in items))
            await asyncio.to_thread(self.queue.settle, outcomes)
            for item, outcome in zip(items, outcomes, strict=True):
                self._count(item, outcome)
        return len(items)

    def _housekeeping(self) -> None:
        self.queue.expire()
        self.queue.purge_finished()
        if self.metrics is not None:
            for state, count in self.queue.counts().items():
                self.metrics.set("edge_offline_queue_items", count, state=state)

    async def _idle_wait(self) -> float:
        wait = self.policy.idle_poll_s
        if self._paused_until:
            wait = min(wait, max(0.0, self._paused_until - time.time()))
        due = await asyncio.to_thread(self.queue.next_due_at)
        if due is not None:
            wait = min(wait, max(0.0, due - time.time()))
        return max(wait, 0.01)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)

    async def _deliver(self, item: QueueItem) -> Outcome:
        import httpx

        headers = {"Idempotency-Key": item.idempotency_key}
        try:
            response = await self._client.post(item.endpoint, json=item.body, headers=headers)
        except httpx.HTTPError as exc:
            return self._unreachable(item, f"cloud unreachable: {type(exc).__name__}: {exc}")
        status = response.status_code
        if status == 401:
            return self._unreachable(item, f"the cloud refused this device's key: {_error_text(response)}", status)
        self._offline_failures, self._paused_until, self._answered = 0, 0.0, True
        if 200 <= status < 300:
            return Outcome(item.id, ItemState.DONE, status, result=_result(response))
        if status in RETRYABLE_STATUS or status >= 500:
            hinted = parse_retry_after(response.headers.get("retry-after"))
            delay = max(hinted or 0.0, backoff_s(item.attempts, self.policy))
            if hinted is not None and status in (429, 503):
                self._paused_until = time.time() + hinted  # the cloud asked everyone to wait
            return Outcome(item.id, ItemState.QUEUED, status, error=_error_text(response), delay_s=delay)
        return Outcome(item.id, ItemState.FAILED, status, error=_error_text(response))

    def _unreachable(self, item: QueueItem, error: str, status: int | None = None) -> Outcome:
        self._answered = False
        now = time.time()
        if now >= self._paused_until:  # the first failure of a round counts; the rest of the batch shares it
            self._offline_failures += 1
            self._paused_until = now + backoff_s(self._offline_failures, self.policy)
        return Outcome(item.id, ItemState.QUEUED, status, error=error, delay_s=self._paused_until - now)

    def _count(self, item: QueueItem, outcome: Outcome) -> None:
        """The metric and one log line per delivery attempt (a failure says why and when it is tried again)."""
        retry = "retry" if outcome.status is not None else "unreachable"
        name = {ItemState.DONE: "done", ItemState.FAILED: "failed"}.get(outcome.state, retry)
        if self.metrics is not None:
            self.metrics.inc("edge_queue_deliveries_total", kind=item.kind.value, outcome=name)
        fields: dict[str, object] = {
            "event": "delivery",
            "item": item.id,
            "kind": item.kind.value,
            "endpoint": item.endpoint,
            "attempt": item.attempts,
            "outcome": name,
            "status": outcome.status,
        }
        if outcome.state is ItemState.DONE:
            log.info(
                "delivered %s %s on attempt %d (HTTP %s)",
                item.kind.value,
                item.id,
                item.attempts,
                outcome.status,
                extra=fields,
            )
            return
        fields["error"] = outcome.error
        if outcome.state is ItemState.FAILED:
            log.error(
                "delivery of %s %s failed for good on attempt %d: %s",
                item.kind.value,
                item.id,
                item.attempts,
                outcome.error,
                extra=fields,
            )
            return
        fields["retry_in_s"] = round(outcome.delay_s, 3)
        log.warning(
            "delivery of %s %s failed on attempt %d, retrying in %.1f s: %s",
            item.kind.value,
            item.id,
            item.attempts,
            outcome.delay_s,
            outcome.error,
            extra=fields,
        )
