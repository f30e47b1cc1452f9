"""What a plan is made of: its request, its candidates, the plan itself, and how candidates rank."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from edge_sdk.errors import ConfigError
from edge_sdk.types import Backend, QuantScheme
from edge_sdk.version import __version__

Status = Literal["ranked", "does-not-fit", "accuracy", "refused", "dominated"]


def speed_key(latency_ms: float | None) -> float:
    """Latency as ranking compares it: two significant digits, so timing noise does not reorder near-ties."""
    return math.inf if latency_ms is None else float(f"{latency_ms:.2g}")


class Objective(StrEnum):
    LATENCY = "latency"  # fastest predicted on the device (LLMs: most tokens/s)
    SIZE = "size"  # smallest file
    ACCURACY = "accuracy"  # closest to the source model


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PlanRequest(_Frozen):
    """Everything a plan depends on: the plan JSON carries it, so the plan can be made again."""

    model: str = Field(description="'zoo:digits-cnn', 'file.py:factory', a .onnx, 'zoo:smollm2', a .gguf")
    profile: str
    objective: Objective = Objective.LATENCY
    max_accuracy_drop: float = Field(default=0.01, ge=0.0, le=1.0)
    backends: tuple[Backend, ...]
    quantizations: tuple[QuantScheme, ...]
    prune: tuple[float, ...] = (0.0,)
    contexts: tuple[int, ...] = ()


class Candidate(_Frozen):
    id: str
    backend: Backend
    quantization: QuantScheme
    prune: float = 0.0
    context: int | None = None
    status: Status
    reasons: tuple[str, ...] = ()
    size_bytes: int | None = None
    peak_bytes: int | None = None
    latency_ms: float | None = None
    tokens_per_second: float | None = None
    accuracy: float | None = Field(default=None, description="accuracy on labels, else top-1 agreement")
    accuracy_drop: float | None = None
    rank: int | None = None

    def __repr__(self) -> str:
        where = f"rank {self.rank}" if self.rank is not None else f"{self.status}: {'; '.join(self.reasons)[:80]}"
        size = f", {self.size_bytes / 1024 / 1024:.2f} MiB" if self.size_bytes else ""
        accuracy = f", accuracy {self.accuracy:.4f}" if self.accuracy is not None else ""
        return f"Candidate({self.id!r}, {where}{size}{accuracy})"


class Plan(_Frozen):
    request: PlanRequest
    profile_id: str = ""
    created_by: str = f"edge-sdk {__version__}"
    candidates: tuple[Candidate, ...]
    pending: tuple[str, ...] = Field(
        default=(), description="candidates not measured yet (an interrupted plan); `plan --from` measures these"
    )

    @property
    def complete(self) -> bool:
        return not self.pending

    def __repr__(self) -> str:
        ranked = self.ranked()
        best = f"best {ranked[0].id!r}" if ranked else "none qualifies"
        r = self.request
        return f"<Plan for {r.model} on {r.profile} by {r.objective.value}: {len(self.candidates)} candidates, {best}>"

    def ranked(self) -> list[Candidate]:
        return sorted((c for c in self.candidates if c.rank is not None), key=lambda c: c.rank or 0)

    def best(self) -> Candidate:
        ranked = self.ranked()
        if not ranked:
            why = "; ".join(f"{c.id}: {c.reasons[0]}" for c in self.candidates if c.reasons)[:2000]
            where = self.profile_id or self.request.profile
            if self.pending:
                why = f"{len(self.pending)} candidate(s) not measured yet; " + why
            raise ConfigError(
                f"no variant of {self.request.model} fits {where} within an accuracy drop of "
                f"{self.request.max_accuracy_drop:.1%}: {why or 'no candidate'}. Allow a larger drop "
                "(--max-accuracy-drop), add quantizations or pruning ratios, or choose a bigger device."
            )
        return ranked[0]


PlanSink = Callable[[Plan], None]  # receives the plan as it stands after each decision


def candidate_id(backend: Backend, scheme: QuantScheme, prune: float = 0.0, context: int | None = None) -> str:
    base = f"{backend.value}-{scheme.value}" + (f"-pruned{round(prune * 100)}" if prune else "")
    return base + (f"@ctx{context}" if context else "")


def rank(candidates: Sequence[Candidate], objective: Objective) -> tuple[Candidate, ...]:
    """Number the candidates that qualify, best first; ties go to the smaller file, then the longer context
    (an LLM's contexts that fit share its size and speed: the longest holds the most), then the id."""
    inf = math.inf

    def key(c: Candidate) -> tuple[float, float, int, str]:
        size, longer = float(c.size_bytes or inf), -(c.context or 0)
        if objective is Objective.SIZE:
            return size, -(c.accuracy or 0.0), longer, c.id
        if objective is Objective.ACCURACY:  # closest to the source: by the drop, never below 0
            drop = c.accuracy_drop if c.accuracy_drop is not None else inf
            return drop, size, longer, c.id
        speed = 1e3 / c.tokens_per_second if c.tokens_per_second else c.latency_ms
        return speed_key(speed), size, longer, c.id

    ok = sorted((c for c in candidates if c.status == "ranked"), key=key)
    order = {c.id: i + 1 for i, c in enumerate(ok)}
    return tuple(c.model_copy(update={"rank": order.get(c.id)}) for c in candidates)
