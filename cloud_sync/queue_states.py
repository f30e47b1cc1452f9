"""The offline queue's words: what an item is, where it is, and what happens at the cap. Apart from queue.py (SQLite,
files) so that a daemon's config and routes can name them without importing the queue itself: a daemon without
a cloud never opens one."""

from __future__ import annotations

from enum import StrEnum


class ItemKind(StrEnum):
    JOB = "job"
    TELEMETRY = "telemetry"


class ItemState(StrEnum):
    QUEUED = "queued"
    DELIVERING = "delivering"
    DONE = "done"
    FAILED = "failed"
    EXPIRED = "expired"
    DROPPED = "dropped"


class CapPolicy(StrEnum):
    """What happens to a new item when the queue holds `max_items` pending items."""

    REJECT_NEW = "reject-new"  # refuse the new item (QueueFullError); the only policy for jobs
    DROP_OLDEST = "drop-oldest"  # mark the oldest queued telemetry item `dropped`, keep the new one (job too)
