"""The delivery loop against a real receiver on loopback: offline, back online, refusals, Retry-After."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import httpx
import pytest
from receiver_app import free_port, make_app, serving

from cloud_sync.delivery import DeliveryLoop, DeliveryPolicy, backoff_s
from cloud_sync.queue import ItemKind, ItemState, OfflineQueue

CHAT = "/v1/chat/completions"
FAST = DeliveryPolicy(concurrency=4, base_backoff_s=0.05, max_backoff_s=0.2, timeout_s=5, idle_poll_s=0.1)


@pytest.fixture
def queue(tmp_path):
    q = OfflineQueue(tmp_path / "q.sqlite")
    yield q
    q.close()


def drain(
    queue: OfflineQueue, url: str, *, until: float = 20.0, policy: DeliveryPolicy = FAST, api_key: str = "device-a"
) -> None:
    """Run the loop until nothing is pending (or `until` seconds)."""

    async def go() -> None:
        loop = DeliveryLoop(queue, url, api_key=api_key, policy=policy)
        loop.start()
        deadline = time.monotonic() + until
        while time.monotonic() < deadline:
            counts = queue.counts()
            if counts["queued"] + counts["delivering"] == 0:
                break
            await asyncio.sleep(0.05)
        await loop.stop()

    asyncio.run(go())


def test_items_queued_while_offline_are_delivered_once_the_cloud_is_back(tmp_path, queue):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    ids = [queue.enqueue(ItemKind.JOB, CHAT, {"model": "m", "i": i})[0].id for i in range(20)]

    async def offline_round() -> DeliveryLoop:
        # a pause longer than a loaded machine's gap between the two rounds below
        loop = DeliveryLoop(queue, url, policy=dataclasses.replace(FAST, base_backoff_s=2, max_backoff_s=2))
        assert await loop.run_once() == 1  # a probe first
        assert not loop.cloud_reachable
        assert await loop.run_once() == 0  # paused: no walk through every item into a refused connection
        await loop.stop()
        return loop

    asyncio.run(offline_round())
    assert queue.counts()["queued"] == 20
    assert "cloud unreachable: ConnectError" in (queue.get(ids[0]).error or "")
    app = make_app(tmp_path / "idem.sqlite")
    with serving(app, port=port):
        drain(queue, url)
        counts = httpx.get(f"{url}/executions").json()
    done = [queue.get(i) for i in ids]
    assert {item.state for item in done} == {ItemState.DONE}
    assert all(item.result["model"] == "m" and item.status == 200 for item in done)
    assert sorted(counts.values()) == [1] * 20  # each key executed once
    app.state.store.close()


def test_a_refusal_fails_the_item_with_the_cloud_message(tmp_path, queue):
    item, _ = queue.enqueue(ItemKind.JOB, CHAT, {"model": "nope", "fail": "bad-request"})
    app = make_app(tmp_path / "idem.sqlite")
    with serving(app) as url:
        drain(queue, url)
    failed = queue.get(item.id)
    assert failed.state is ItemState.FAILED and failed.attempts == 1 and failed.status == 400
    assert failed.error == "HTTP 400: the model 'nope' does not exist"
    app.state.store.close()


def test_unavailable_is_retried_and_retry_after_is_honoured(tmp_path, queue):
    busy, _ = queue.enqueue(ItemKind.JOB, CHAT, {"model": "m", "fail": "unavailable"})
    limited, _ = queue.enqueue(ItemKind.JOB, CHAT, {"model": "m", "fail": "slow-down"})
    app = make_app(tmp_path / "idem.sqlite")

    async def one_round(url: str) -> None:
        loop = DeliveryLoop(queue, url, policy=FAST)
        for _ in range(3):  # a probe, then the rest
            if queue.get(limited.id).attempts == 0:
                await loop.run_once()
        await loop.stop()

    with serving(app) as url:
        asyncio.run(one_round(url))
        waiting = queue.get(limited.id)
        assert waiting.state is ItemState.QUEUED and waiting.status == 429
        assert waiting.next_attempt_at - time.time() > 1.5  # the cloud's "Retry-After: 2", not our 0.05 s
        drain(queue, url)
    assert queue.get(busy.id).state is ItemState.DONE and queue.get(busy.id).attempts == 2
    assert queue.get(limited.id).state is ItemState.DONE and queue.get(limited.id).attempts == 2
    app.state.store.close()


def test_an_error_body_that_is_not_an_object_is_retried_and_the_loop_keeps_delivering(tmp_path, queue):
    odd, _ = queue.enqueue(ItemKind.JOB, CHAT, {"model": "m", "fail": "proxy-list"})
    later, _ = queue.enqueue(ItemKind.JOB, CHAT, {"model": "m"})
    app = make_app(tmp_path / "idem.sqlite")
    with serving(app) as url:
        drain(queue, url, until=10.0)
    assert queue.get(odd.id).state is ItemState.DONE and queue.get(odd.id).attempts == 2
    assert queue.get(later.id).state is ItemState.DONE
    app.state.store.close()


def test_a_refused_device_key_keeps_the_jobs_queued_until_the_key_is_fixed(queue):
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def chat(request):
        if request.headers.get("authorization") != "Bearer right-key":
            return JSONResponse({"error": {"message": "unknown device key"}}, status_code=401)
        return JSONResponse({"object": "chat.completion"})

    async def alive(_request):
        return JSONResponse({})

    cloud = Starlette(routes=[Route(CHAT, chat, methods=["POST"]), Route("/executions", alive)])

    ids = [queue.enqueue(ItemKind.JOB, CHAT, {"model": "m", "i": i})[0].id for i in range(5)]

    async def rounds(url: str, key: str, n: int) -> None:
        loop = DeliveryLoop(queue, url, api_key=key, policy=FAST)
        for _ in range(n):
            await loop.run_once()
            await asyncio.sleep(0.05)
        await loop.stop()

    with serving(cloud) as url:
        asyncio.run(rounds(url, "wrong-key", 6))
        waiting = [queue.get(i) for i in ids]
        assert {item.state for item in waiting} == {ItemState.QUEUED}  # not failed: the job is not at fault
        assert "unknown device key" in (waiting[0].error or "")
        drain(queue, url, until=10.0, api_key="right-key")  # the key fixed (the daemon restarted with it)
    assert {queue.get(i).state for i in ids} == {ItemState.DONE}


def test_backoff_grows_is_capped_and_jittered():
    policy = DeliveryPolicy(base_backoff_s=1.0, max_backoff_s=8.0)
    samples = {n: [backoff_s(n, policy) for _ in range(200)] for n in (1, 2, 3, 10)}
    assert all(0.5 <= s <= 1.0 for s in samples[1])
    assert all(2.0 <= s <= 4.0 for s in samples[3])
    assert all(4.0 <= s <= 8.0 for s in samples[10])
    assert len(set(samples[10])) > 100


def test_every_delivery_attempt_is_logged_with_its_outcome(tmp_path, queue, caplog):
    """Failed deliveries used to leave no log line: each attempt now logs one, with the fields a collector needs."""
    refused, _ = queue.enqueue(ItemKind.JOB, CHAT, {"model": "nope", "fail": "bad-request"})
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with caplog.at_level("INFO", logger="cloud_sync.delivery"):

        async def offline_round() -> None:
            loop = DeliveryLoop(queue, url, policy=FAST)
            await loop.run_once()  # nothing listens: the attempt fails and is retried later
            await loop.stop()

        asyncio.run(offline_round())
        delivered, _ = queue.enqueue(ItemKind.JOB, CHAT, {"model": "m"})
        app = make_app(tmp_path / "idem.sqlite")
        with serving(app, port=port):
            drain(queue, url)
        app.state.store.close()
    lines = [r for r in caplog.records if getattr(r, "event", None) == "delivery"]
    by_outcome = {(r.item, r.outcome): r for r in lines}  # type: ignore[attr-defined]
    unreachable = by_outcome[(refused.id, "unreachable")]
    assert unreachable.levelname == "WARNING" and unreachable.attempt == 1  # type: ignore[attr-defined]
    assert "cloud unreachable: ConnectError" in unreachable.error and unreachable.retry_in_s > 0  # type: ignore[attr-defined]
    failed = by_outcome[(refused.id, "failed")]
    assert failed.levelname == "ERROR" and failed.status == 400 and failed.attempt == 2  # type: ignore[attr-defined]
    assert "does not exist" in failed.getMessage()
    done = by_outcome[(delivered.id, "done")]
    assert done.levelname == "INFO" and done.status == 200 and done.endpoint == CHAT  # type: ignore[attr-defined]
    assert len(lines) == 3  # one line an attempt, no more
