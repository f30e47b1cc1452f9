"""Where a request runs: on the device, in the cloud, or nowhere — always with the reason.

The router is pure policy: the daemon measures the facts (installed? fits memory now? context? queue wait?)
and the router turns them into a Decision. Privacy wins over everything: a model the policy keeps on the
device is never sent, whatever the caller or the device's state says.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from cloud_sync.breaker import BreakerState, CircuitBreaker
from edge_sdk.errors import InputError, choices

ALL_MODELS = "all"


class Route(StrEnum):
    LOCAL = "local"
    CLOUD = "cloud"
    REJECT = "reject"


class Reason(StrEnum):
    """Why a request went where it went (header X-Edge-Route-Reason, metric label, log)."""

    DEFAULT = "default"  # local: installed, fits, within the context and the SLO
    NOT_INSTALLED = "not_installed"  # the model is not on this device
    NO_MEMORY = "no_memory"  # the model does not fit the free memory now
    CONTEXT = "context"  # prompt tokens + max_tokens beyond the local context
    SLO = "slo"  # the estimated queue wait is over --slo-ms
    OVERLOADED = "overloaded"  # the local queue is full
    LOCAL_FAILED = "local_failed"  # the local engine failed before the first byte
    CALLER = "caller"  # the caller's X-Edge-Route header
    PRIVACY = "privacy"  # the policy keeps this model on the device
    BREAKER_OPEN = "breaker_open"  # the cloud keeps failing: stay local, or fail fast
    CLOUD_FAILED = "cloud_failed"  # the cloud failed before answering; the device could, so it did
    NO_CLOUD = "no_cloud"  # the cloud was asked for, but none is configured
    INVALID = "invalid"  # refused before routing: a malformed request, a wrong API key, a body over the limit


class CallerChoice(StrEnum):
    AUTO = "auto"
    LOCAL = "local"
    CLOUD = "cloud"

    @classmethod
    def parse(cls, header: str | None) -> CallerChoice:
        value = (header or "auto").strip().lower()
        try:
            return cls(value)
        except ValueError:
            raise InputError(f"X-Edge-Route {header!r} is not valid; valid: {choices(c.value for c in cls)}") from None


@dataclass(frozen=True)
class PrivacyPolicy:
    """Models whose requests never leave the device; ALL_MODELS ("all") keeps every request here."""

    local_only: frozenset[str] = frozenset()

    def forbids_cloud(self, model: str) -> bool:
        return ALL_MODELS in self.local_only or model in self.local_only


@dataclass(frozen=True)
class LocalFacts:
    """What the device can do for one request, measured by the daemon just before routing."""

    installed: bool
    fits_memory: bool = True
    context_limit: int | None = None  # None: the model has no token context (tensor or embedding-only use)
    prompt_tokens: int = 0
    max_tokens: int = 0
    estimated_wait_s: float = 0.0

    @property
    def within_context(self) -> bool:
        return self.context_limit is None or self.prompt_tokens + self.max_tokens <= self.context_limit

    @property
    def possible(self) -> bool:
        """Whether the device can serve it at all (perhaps slowly)."""
        return self.installed and self.fits_memory and self.within_context


@dataclass(frozen=True)
class Decision:
    route: Route
    reason: Reason
    detail: str
    status: int = 200  # for REJECT: the HTTP status to answer with
    retry_after_s: float | None = None


class Router:
    def __init__(
        self,
        *,
        cloud_configured: bool,
        slo_s: float | None = None,
        privacy: PrivacyPolicy | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self.cloud_configured = cloud_configured
        self.slo_s = slo_s
        self.privacy = privacy or PrivacyPolicy()
        self.breaker = breaker

    def decide(self, model: str, facts: LocalFacts, caller: CallerChoice = CallerChoice.AUTO) -> Decision:
        private = self.privacy.forbids_cloud(model)
        if caller is CallerChoice.LOCAL:
            return Decision(Route.LOCAL, Reason.CALLER, "the caller asked for local")
        if caller is CallerChoice.CLOUD:
            if private:
                return self._reject(Reason.PRIVACY, f"the privacy policy keeps {model!r} on this device", 403)
            if not self.cloud_configured:
                return self._reject(Reason.NO_CLOUD, "the caller asked for the cloud, but none is configured", 503)
            return self._to_cloud(model, Reason.CALLER, "the caller asked for the cloud", facts)
        reason, detail = self._why_not_local(model, facts)
        if reason is Reason.DEFAULT or not self.cloud_configured:
            return Decision(Route.LOCAL, reason, detail)  # without a cloud the daemon answers as it always did
        if private:
            if facts.possible:
                return Decision(Route.LOCAL, Reason.PRIVACY, f"{detail}, but the privacy policy keeps it here")
            status = {Reason.NOT_INSTALLED: 404, Reason.CONTEXT: 400}.get(reason, 503)
            return self._reject(Reason.PRIVACY, f"{detail}, and the privacy policy forbids the cloud", status)
        return self._to_cloud(model, reason, detail, facts)

    def after_local_failure(self, model: str, reason: Reason, detail: str, caller: CallerChoice) -> Decision | None:
        """Where to retry a request the device failed before its first byte; None: let the local error stand."""
        if not self.cloud_configured or caller is CallerChoice.LOCAL or self.privacy.forbids_cloud(model):
            return None
        if self.breaker is not None and self.breaker.state is BreakerState.OPEN:
            return None
        return Decision(Route.CLOUD, reason, detail)

    def _why_not_local(self, model: str, facts: LocalFacts) -> tuple[Reason, str]:
        if not facts.installed:
            return Reason.NOT_INSTALLED, f"model {model!r} is not installed here"
        if not facts.within_context:
            return Reason.CONTEXT, (
                f"prompt of ~{facts.prompt_tokens} tokens + max_tokens {facts.max_tokens} exceeds the local "
                f"context of {facts.context_limit}"
            )
        if not facts.fits_memory:
            return Reason.NO_MEMORY, f"model {model!r} does not fit the free memory now"
        if self.slo_s is not None and facts.estimated_wait_s > self.slo_s:
            wait_ms, slo_ms = facts.estimated_wait_s * 1e3, self.slo_s * 1e3
            return Reason.SLO, f"estimated queue wait {wait_ms:.0f} ms is over the SLO of {slo_ms:.0f} ms"
        return Reason.DEFAULT, "served here"

    def _to_cloud(self, model: str, reason: Reason, detail: str, facts: LocalFacts) -> Decision:
        if self.breaker is None or self.breaker.state is not BreakerState.OPEN:
            return Decision(Route.CLOUD, reason, detail)
        wait = self.breaker.retry_after_s()
        if reason is not Reason.CALLER and facts.possible:
            return Decision(Route.LOCAL, Reason.BREAKER_OPEN, f"{detail}, but the cloud is failing: kept local")
        return self._reject(Reason.BREAKER_OPEN, f"{detail}, but the cloud keeps failing (breaker open)", 503, wait)

    @staticmethod
    def _reject(reason: Reason, detail: str, status: int, retry_after_s: float | None = None) -> Decision:
        return Decision(Route.REJECT, reason, detail, status, retry_after_s)
