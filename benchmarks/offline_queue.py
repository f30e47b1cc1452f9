"""The offline queue's costs: a durable enqueue vs a bare SQLite insert, and delivery vs posting directly.

    python benchmarks/offline_queue.py [--items 300]

1. Enqueue: `OfflineQueue.enqueue` (idempotency lookup, cap check, one synchronous=FULL commit) vs a bare
   `INSERT` + commit in a SQLite file with the same pragmas, interleaved rounds, medians per call.
2. Delivery: `--items` queued items delivered by `DeliveryLoop` to a receiver on loopback that mounts the
   idempotency middleware, vs the same number of POSTs sent straight to it with the same concurrency
   (no queue bookkeeping), items per second.

Writes benchmarks/results/offline_queue.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parents[1] / "tests" / "cloud_sync"))
from _common import interleaved, write_results
from receiver_app import make_app, serving

from cloud_sync.delivery import DeliveryLoop, DeliveryPolicy
from cloud_sync.queue import ItemKind, OfflineQueue

BODY = {"model": "smollm2", "prompt": "Summarise the day", "max_tokens": 16}
CONCURRENCY = 4


def enqueue_costs(tmp: Path, rounds: int = 5, calls: int = 40) -> dict:
    queue = OfflineQueue(tmp / "bench.sqlite", max_items=10**6)
    raw = sqlite3.connect(tmp / "raw.sqlite", isolation_level=None)
    raw.execute("PRAGMA journal_mode=WAL")
    raw.execute("PRAGMA synchronous=FULL")
    raw.execute("CREATE TABLE t (k TEXT PRIMARY KEY, body TEXT)")
    text = json.dumps(BODY)
    counter = iter(range(10**9))

    def sdk() -> None:
        queue.enqueue(ItemKind.JOB, "/v1/completions", BODY)

    def bare() -> None:
        raw.execute("BEGIN IMMEDIATE")
        raw.execute("INSERT INTO t VALUES (?, ?)", (f"k{next(counter)}", text))
        raw.execute("COMMIT")

    sdk_s, raw_s = interleaved(sdk, bare, rounds, calls)
    queue.close()
    raw.close()
    return {
        "enqueue_median_us": sdk_s * 1e6,
        "bare_insert_median_us": raw_s * 1e6,
        "ratio_bare_over_sdk": raw_s / sdk_s,
    }


async def _deliver_all(queue: OfflineQueue, url: str, items: int) -> float:
    loop = DeliveryLoop(queue, url, policy=DeliveryPolicy(concurrency=CONCURRENCY, idle_poll_s=0.02))
    start = time.perf_counter()
    loop.start()
    while queue.counts()["done"] < items:
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - start
    await loop.stop()
    return elapsed


async def _post_all(url: str, items: int, prefix: str) -> float:
    semaphore = asyncio.Semaphore(CONCURRENCY)
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:

        async def one(i: int) -> None:
            async with semaphore:
                r = await client.post("/v1/completions", json=BODY, headers={"Idempotency-Key": f"{prefix}{i}"})
                r.raise_for_status()

        start = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(items)))
        return time.perf_counter() - start


def delivery_rates(tmp: Path, items: int) -> dict:
    app = make_app(tmp / "idem.sqlite")
    with serving(app) as url:
        queue = OfflineQueue(tmp / "deliver.sqlite", max_items=10**6)
        for _ in range(items):
            queue.enqueue(ItemKind.JOB, "/v1/completions", BODY)
        via_queue = asyncio.run(_deliver_all(queue, url, items))
        queue.close()
        direct = asyncio.run(_post_all(url, items, "direct-"))
    app.state.store.close()
    return {
        "items": items,
        "concurrency": CONCURRENCY,
        "queue_items_per_s": items / via_queue,
        "direct_items_per_s": items / direct,
        "ratio_queue_over_direct": direct / via_queue,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        enqueue = enqueue_costs(Path(tmp))
        print(
            f"enqueue (synchronous=FULL): {enqueue['enqueue_median_us']:.0f} µs median; bare SQLite insert "
            f"{enqueue['bare_insert_median_us']:.0f} µs; ratio {enqueue['ratio_bare_over_sdk']:.2f}"
        )
        delivery = delivery_rates(Path(tmp), args.items)
        print(
            f"delivery of {args.items} items at concurrency {CONCURRENCY}: {delivery['queue_items_per_s']:.0f}/s "
            f"via the queue, {delivery['direct_items_per_s']:.0f}/s posted directly; "
            f"ratio {delivery['ratio_queue_over_direct']:.2f}"
        )
    write_results("offline_queue", {"enqueue": enqueue, "delivery": delivery})


if __name__ == "__main__":
    main()
