"""A circuit breaker: after repeated cloud failures, fail fast until a trial request succeeds.

    closed ──(failure_threshold failures in a row)──► open ──(reset_after_s)──► half-open
      ▲                                                 ▲                          │
      └───────────────(the trial succeeds)──────────────┼──────────────────────────┤
                                                        └────(the trial fails)─────┘

In half-open exactly one trial request goes through; the others fail fast until it ends.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from enum import StrEnum

from edge_sdk.errors import BreakerOpenError, ConfigError


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        reset_after_s: float = 30.0,
        name: str = "cloud",
        on_change: Callable[[BreakerState, BreakerState], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ConfigError(f"failure_threshold must be at least 1, got {failure_threshold}")
        if reset_after_s <= 0:
            raise ConfigError(f"reset_after_s must be > 0, got {reset_after_s}")
        self.failure_threshold, self.reset_after_s, self.name = failure_threshold, reset_after_s, name
        self.on_change = on_change
        self._clock = clock
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_started: float | None = None

    @property
    def state(self) -> BreakerState:
        """The state as a caller would meet it now (open turns half-open once the cool-down is over)."""
        with self._lock:
            if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self.reset_after_s:
                return BreakerState.HALF_OPEN
            return self._state

    def retry_after_s(self) -> float:
        """Seconds until a trial request may go through (0 when closed)."""
        with self._lock:
            if self._state is BreakerState.CLOSED:
                return 0.0
            return max(0.0, self.reset_after_s - (self._clock() - self._opened_at))

    def allow(self) -> None:
        """Let a request through, or raise BreakerOpenError. In half-open only one trial is let through."""
        with self._lock:
            now = self._clock()
            if self._state is BreakerState.CLOSED:
                return
            cooled = now - self._opened_at >= self.reset_after_s
            # A trial that never reported back (its task was cancelled) must not keep the breaker shut forever.
            trial_stale = self._trial_started is not None and now - self._trial_started >= self.reset_after_s
            if cooled and (self._trial_started is None or trial_stale):
                self._move(BreakerState.HALF_OPEN)
                self._trial_started = now
                return
            wait = max(0.0, self.reset_after_s - (now - self._opened_at))
        raise BreakerOpenError(
            f"the {self.name} circuit breaker is open after {self.failure_threshold} failures in a row; "
            f"failing fast, next trial in {wait:.1f} s",
            retry_after_s=wait if wait > 0 else self.reset_after_s,
        )

    def record_success(self) -> None:
        with self._lock:
            self._failures = 0
            self._trial_started = None
            self._move(BreakerState.CLOSED)

    def record_failure(self) -> None:
        with self._lock:
            self._failures += 1
            if self._state is BreakerState.HALF_OPEN or self._failures >= self.failure_threshold:
                self._opened_at = self._clock()
                self._trial_started = None
                self._move(BreakerState.OPEN)

    def _move(self, new: BreakerState) -> None:
        old, self._state = self._state, new
        if old is not new and self.on_change is not None:
            self.on_change(old, new)
