"""One retry policy for every HTTP call a device or gateway makes: exponential backoff with jitter, capped, and
the server's `Retry-After` honoured. Used by the cloud client (OpenAI calls), the delivery loop (queued jobs and
telemetry) and the registry client (sync, publish)."""

from __future__ import annotations

import email.utils
import random
import time
from dataclasses import dataclass

from edge_sdk.errors import ConfigError

# "Not now" answers worth another try (a 4xx other than 429 says the request itself is wrong).
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """`attempts` counts the first try. Delay before retry n (0-based) is base·multiplier^n, capped, with jitter:
    a random share `jitter` of it is taken off, so devices that failed together do not retry together."""

    attempts: int = 3
    base_delay_s: float = 0.2
    multiplier: float = 2.0
    max_delay_s: float = 10.0
    jitter: float = 0.5
    max_retry_after_s: float = 30.0  # a longer Retry-After is not waited for in-line: the error carries it

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ConfigError(f"attempts must be at least 1 (the first try), got {self.attempts}")
        if self.base_delay_s < 0 or self.max_delay_s < 0 or self.max_retry_after_s < 0:
            raise ConfigError("retry delays must be >= 0")
        if not 0 <= self.jitter <= 1:
            raise ConfigError(f"jitter must be in [0, 1], got {self.jitter}")

    def backoff(self, retry: int) -> float:
        delay = min(self.max_delay_s, self.base_delay_s * self.multiplier**retry)
        return delay * (1 - self.jitter * random.random())

    def delay(self, retry: int, retry_after_s: float | None = None) -> float:
        """How long to wait before retry `retry` (0-based): the backoff, or longer when the server asked so."""
        return max(self.backoff(retry), retry_after_s or 0.0)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))  # the standard says whole seconds; some servers send fractions
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
