"""The durable offline queue: duplicate keys, the size cap and its policy, TTL, crash recovery."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time

import pytest

from cloud_sync.queue import CapPolicy, ItemKind, ItemState, OfflineQueue
from edge_sdk.errors import IdempotencyKeyReusedError, QueueFullError, QueueLockedError, UnknownItemError

CHAT = "/v1/chat/completions"
BODY = {"model": "smollm2", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def queue(tmp_path):
    q = OfflineQueue(tmp_path / "q.sqlite", max_items=3)
    yield q
    q.close()


def test_enqueue_then_get_round_trips(queue):
    item, created = queue.enqueue(ItemKind.JOB, CHAT, BODY, idempotency_key="k1")
    assert created and item.state is ItemState.QUEUED and item.attempts == 0
    again = queue.get(item.id)
    assert again.body == BODY and again.idempotency_key == "k1" and again.endpoint == CHAT
    assert item.expires_at == pytest.approx(item.created_at + 7 * 24 * 3600)


def test_same_key_twice_returns_the_existing_item(queue):
    first, _ = queue.enqueue(ItemKind.JOB, CHAT, BODY, idempotency_key="same")
    second, created = queue.enqueue(ItemKind.JOB, CHAT, dict(BODY), idempotency_key="same")
    assert not created and second.id == first.id
    assert queue.counts()["queued"] == 1


def test_same_key_for_another_request_is_refused(queue):
    queue.enqueue(ItemKind.JOB, CHAT, BODY, idempotency_key="same")
    with pytest.raises(IdempotencyKeyReusedError, match="'same'.*different request"):
        queue.enqueue(ItemKind.JOB, CHAT, {**BODY, "max_tokens": 3}, idempotency_key="same")


def test_unknown_id_names_it(queue):
    with pytest.raises(UnknownItemError, match="job_nope"):
        queue.get("job_nope")


def test_jobs_beyond_the_cap_are_refused_never_dropped(queue):
    ids = [queue.enqueue(ItemKind.JOB, CHAT, BODY)[0].id for _ in range(3)]
    with pytest.raises(QueueFullError, match="cap 3.*reject-new"):
        queue.enqueue(ItemKind.JOB, CHAT, BODY)
    assert [queue.get(i).state for i in ids] == [ItemState.QUEUED] * 3


def test_telemetry_beyond_the_cap_drops_the_oldest_telemetry_visibly(queue):
    job, _ = queue.enqueue(ItemKind.JOB, CHAT, BODY)
    old, _ = queue.enqueue(ItemKind.TELEMETRY, "/v1/telemetry", {"n": 1})
    queue.enqueue(ItemKind.TELEMETRY, "/v1/telemetry", {"n": 2})
    queue.enqueue(ItemKind.TELEMETRY, "/v1/telemetry", {"n": 3})
    dropped = queue.get(old.id)
    assert dropped.state is ItemState.DROPPED and "queue full" in (dropped.error or "")
    assert queue.get(job.id).state is ItemState.QUEUED  # a job is never the one dropped
    assert queue.counts()["queued"] == 3


def test_a_job_takes_the_place_of_the_oldest_telemetry_in_a_full_queue(queue):
    # Offline for days, snapshots fill the cap: a job must still be accepted, telemetry is what may be dropped.
    old, _ = queue.enqueue(ItemKind.TELEMETRY, "/v1/telemetry", {"n": 1})
    for n in (2, 3):
        queue.enqueue(ItemKind.TELEMETRY, "/v1/telemetry", {"n": n})
    job, created = queue.enqueue(ItemKind.JOB, CHAT, BODY)
    assert created and queue.get(job.id).state is ItemState.QUEUED
    assert queue.get(old.id).state is ItemState.DROPPED
    assert queue.counts()["queued"] == 3


def test_telemetry_can_be_rejected_instead(tmp_path):
    q = OfflineQueue(tmp_path / "q.sqlite", max_items=1, telemetry_policy=CapPolicy.REJECT_NEW)
    q.enqueue(ItemKind.TELEMETRY, "/v1/telemetry", {"n": 1})
    with pytest.raises(QueueFullError, match="telemetry items: reject-new"):
        q.enqueue(ItemKind.TELEMETRY, "/v1/telemetry", {"n": 2})
    q.close()


def test_finished_items_do_not_count_against_the_cap(queue):
    for _ in range(3):
        queue.enqueue(ItemKind.JOB, CHAT, BODY)
    for item in queue.claim_due(3):
        queue.complete(item.id, 200, {"ok": True})
    assert queue.enqueue(ItemKind.JOB, CHAT, BODY)[1]


def test_ttl_marks_items_expired_with_the_reason(queue):
    item, _ = queue.enqueue(ItemKind.JOB, CHAT, BODY, ttl_s=0.05)
    [claimed] = queue.claim_due(5)
    queue.retry_later(claimed.id, 0.0, "cloud unreachable: ConnectError")
    time.sleep(0.1)
    assert queue.claim_due(5) == []  # past its TTL: not delivered any more
    assert queue.expire() == 1
    expired = queue.get(item.id)
    assert expired.state is ItemState.EXPIRED
    assert "TTL" in expired.error and "1 attempt" in expired.error and "ConnectError" in expired.error


def test_finished_items_are_purged_one_ttl_after_they_ended(queue):
    done, _ = queue.enqueue(ItemKind.JOB, CHAT, {"n": 1})
    waiting, _ = queue.enqueue(ItemKind.JOB, CHAT, {"n": 2}, ttl_s=10 * queue.ttl_s)
    queue.claim_due(1)
    queue.complete(done.id, 200, {})
    assert queue.purge_finished() == 0  # kept for GET /v1/jobs/{id}
    assert queue.purge_finished(now=time.time() + queue.ttl_s + 1) == 1
    with pytest.raises(UnknownItemError):
        queue.get(done.id)
    assert queue.get(waiting.id).state is ItemState.QUEUED  # pending items are never purged


def test_claim_is_oldest_first_and_respects_the_next_attempt_time(queue):
    a, _ = queue.enqueue(ItemKind.JOB, CHAT, {"n": 1})
    b, _ = queue.enqueue(ItemKind.JOB, CHAT, {"n": 2})
    [first] = queue.claim_due(1)
    assert first.id == a.id and first.state is ItemState.DELIVERING and first.attempts == 1
    queue.retry_later(a.id, 60.0, "HTTP 503: busy", 503)
    [second] = queue.claim_due(5)
    assert second.id == b.id
    waiting = queue.get(a.id)
    assert waiting.state is ItemState.QUEUED and waiting.error == "HTTP 503: busy" and waiting.status == 503
    assert queue.next_due_at() == pytest.approx(time.time() + 60, abs=2)


def test_done_and_failed_keep_result_and_error(queue):
    a, _ = queue.enqueue(ItemKind.JOB, CHAT, {"n": 1})
    b, _ = queue.enqueue(ItemKind.JOB, CHAT, {"n": 2})
    queue.claim_due(2)
    queue.complete(a.id, 200, {"choices": [1]})
    queue.fail(b.id, 400, "HTTP 400: bad model")
    assert queue.get(a.id).result == {"choices": [1]} and queue.get(a.id).public()["state"] == "done"
    assert queue.get(b.id).state is ItemState.FAILED and queue.get(b.id).error == "HTTP 400: bad model"


def test_a_second_process_cannot_open_the_same_queue(queue):
    with pytest.raises(QueueLockedError, match="in use by another process"):
        OfflineQueue(queue.path)


def _claim_then_die(path: str, ready) -> None:
    q = OfflineQueue(path)
    q.enqueue(ItemKind.JOB, CHAT, {"n": 1}, idempotency_key="acked")
    q.claim_due(1)
    ready.set()
    os.kill(os.getpid(), signal.SIGKILL)


def test_sigkill_keeps_acknowledged_items_and_requeues_claimed_ones(tmp_path):
    path = tmp_path / "q.sqlite"
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    proc = ctx.Process(target=_claim_then_die, args=(str(path), ready))
    proc.start()
    proc.join(timeout=60)
    assert ready.is_set() and proc.exitcode == -signal.SIGKILL
    q = OfflineQueue(path)  # the dead process's lock went with it
    assert q.recovered == 1
    [item] = q.claim_due(5)
    assert item.idempotency_key == "acked" and item.attempts == 2
    q.close()
