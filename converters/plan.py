"""The fit planner: enumerate backend × quantization × pruning (× context for LLMs), drop what cannot fit the
profile before converting it, convert and measure what can, and rank by the user's objective.

A plan is a JSON document holding its own request, so it can be made again (`edge-sdk plan --from plan.json`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from converters.pipeline import Added, ConvertOptions, convert, get_exporter
from converters.progress import Progress, ProgressCallback
from converters.prune import check_ratio, parameter_count, prune_structured
from converters.sources import ModelSource, TorchSource
from device_profiles import DeviceProfile
from device_profiles.estimate import BITS_PER_WEIGHT, ModelFacts
from device_profiles.fit import check_fit
from edge_sdk.bundle import AccuracyReport, FitReport, Variant
from edge_sdk.errors import BackendUnavailableError, BundleError, ConfigError, EdgeSDKError
from edge_sdk.types import Backend, QuantScheme
from edge_sdk.version import __version__

PREFIT_MARGIN = 1.15  # an LLM estimated from another quantization's file is converted unless clearly too big
Status = Literal["ranked", "does-not-fit", "accuracy", "refused"]


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
        if objective is Objective.ACCURACY:
            return -(c.accuracy or 0.0), size, longer, c.id
        speed = 1e3 / c.tokens_per_second if c.tokens_per_second else (c.latency_ms or inf)
        return float(f"{speed:.2g}"), size, longer, c.id  # two digits: timing noise must not reorder near-ties

    ok = sorted((c for c in candidates if c.status == "ranked"), key=key)
    order = {c.id: i + 1 for i, c in enumerate(ok)}
    return tuple(c.model_copy(update={"rank": order.get(c.id)}) for c in candidates)


def _score(accuracy: AccuracyReport | None) -> tuple[float | None, float | None]:
    """(value, drop) of the metric a user judges by: task accuracy when labelled, else top-1 agreement."""
    if accuracy is None:
        return None, None
    metric = accuracy.metric("accuracy") or accuracy.metric("top1_agreement")
    if metric is None:
        return None, None
    reference = metric.reference if metric.reference is not None else 1.0
    return metric.value, max(0.0, reference - metric.value)


def judge(
    variant: Variant,
    root: Path,
    profile: DeviceProfile,
    request: PlanRequest,
    *,
    context: int | None = None,
    host: DeviceProfile | None = None,
    latency_s: float | None = None,
) -> Candidate:
    """A converted variant as a candidate: does it fit, is it accurate enough, how fast is it predicted."""
    facts = ModelFacts.of_variant(variant, root)
    fit: FitReport = check_fit(profile, facts, context=context, host=host, host_latency_s=latency_s)
    value, drop = _score(variant.accuracy)
    reasons = list(fit.reasons)
    status: Status = "ranked" if fit.fits else "does-not-fit"
    if drop is not None and drop > request.max_accuracy_drop + 1e-9:
        reasons.append(f"accuracy drop {drop:.2%} exceeds the {request.max_accuracy_drop:.2%} allowed")
        status = "accuracy" if status == "ranked" else status
    elif variant.accuracy is not None and not variant.accuracy.passed:
        failed = [m.name for m in variant.accuracy.metrics if not m.passed]
        reasons.append(f"outside its accuracy gate on {', '.join(failed)}")
        status = "accuracy" if status == "ranked" else status
    return Candidate(
        id=candidate_id(variant.backend, variant.recipe.quantization, variant.recipe.pruning_ratio, context),
        backend=variant.backend,
        quantization=variant.recipe.quantization,
        prune=variant.recipe.pruning_ratio,
        context=context,
        status=status,
        reasons=tuple(reasons),
        size_bytes=variant.size_bytes,
        peak_bytes=fit.estimated_peak_bytes,
        latency_ms=fit.predicted_latency_ms,
        tokens_per_second=fit.predicted_tokens_per_second,
        accuracy=value,
        accuracy_drop=drop,
    )


class _Recorder:
    """The candidates decided so far and those still to measure: each decision is kept at once and handed to
    `checkpoint` (a plan file updated as it goes, so an interrupted plan keeps what it measured)."""

    def __init__(
        self,
        request: PlanRequest,
        profile: DeviceProfile,
        everything: Sequence[str],
        done: Sequence[Candidate],
        checkpoint: PlanSink | None,
    ) -> None:
        self.request, self.profile, self.checkpoint = request, profile, checkpoint
        self.known = {c.id: c for c in done}
        self.candidates: dict[str, Candidate] = {}
        self.pending = [i for i in everything if i not in self.known]

    def reuse(self, cid: str) -> bool:
        """Take a candidate measured before (`plan --from`): True when there was one."""
        if cid not in self.known:
            return False
        self.candidates[cid] = self.known[cid]
        return True

    def record(self, candidate: Candidate, *, save: bool = True) -> None:
        self.candidates[candidate.id] = candidate
        if candidate.id in self.pending:
            self.pending.remove(candidate.id)
        if save:
            self.save()

    def save(self) -> None:
        if self.checkpoint is not None:
            self.checkpoint(self.plan())

    def plan(self) -> Plan:
        ranked = rank(list(self.candidates.values()), self.request.objective)
        return Plan(request=self.request, profile_id=self.profile.id, candidates=ranked, pending=tuple(self.pending))


def plan_tensor_model(
    source: ModelSource,
    request: PlanRequest,
    profile: DeviceProfile,
    options: ConvertOptions,
    workdir: Path,
    *,
    host: DeviceProfile | None = None,
    progress: ProgressCallback | None = None,
    done: Sequence[Candidate] = (),
    checkpoint: PlanSink | None = None,
) -> Plan:
    """Plan for a tensor model (ONNX Runtime, ExecuTorch, ...); `options` carries eval, calibration, training data.

    Each pruning ratio is one conversion (the source pruned and recovered once, exported once per backend, every
    quantization made from that export). Candidates in `done` (measured before) are taken as they are, never
    converted again; each new decision goes to `checkpoint` as it is made."""
    from runtimes.measure import host_latency

    report = progress if progress is not None else (lambda _p: None)
    for ratio in request.prune:
        check_ratio(ratio)
    if any(request.prune) and not isinstance(source, TorchSource):
        raise ConfigError(f"pruning needs a torch model; {source.describe()} is {source.kind}: plan with --prune 0")
    refused: list[Candidate] = []
    pairs: list[tuple[Backend, QuantScheme]] = []
    for backend in request.backends:
        try:
            exporter = get_exporter(backend)
        except EdgeSDKError as exc:
            refused += [_refused(backend, q, 0.0, str(exc)) for q in request.quantizations]
            continue
        for scheme in request.quantizations:
            try:
                exporter.check(scheme)
                pairs.append((backend, scheme))
            except ConfigError as exc:
                refused.append(_refused(backend, scheme, 0.0, str(exc)))
    everything = [candidate_id(b, q, r) for r in request.prune for b, q in pairs]
    rec = _Recorder(request, profile, everything, done, checkpoint)
    for candidate in refused:
        if not rec.reuse(candidate.id):
            rec.record(candidate, save=False)
    # Drop what cannot fit before spending a conversion on it: weights from the parameter count.
    survivors: dict[float, list[tuple[Backend, QuantScheme]]] = {}
    for ratio in request.prune:
        todo = [(b, q) for b, q in pairs if not rec.reuse(candidate_id(b, q, ratio))]
        if not todo:
            continue
        try:
            params = _parameters(source, ratio)
        except (BackendUnavailableError, ConfigError) as exc:  # no torch-pruning, or nothing to remove: the
            # unpruned candidates still count
            for backend, scheme in todo:
                rec.record(_refused(backend, scheme, ratio, str(exc)), save=False)
            continue
        for backend, scheme in todo:
            weights = int(params * BITS_PER_WEIGHT.get(scheme, 32) / 8)
            facts = ModelFacts(backend, scheme, weights, source.input_specs())
            fit = check_fit(profile, facts)
            if fit.fits:
                survivors.setdefault(ratio, []).append((backend, scheme))
            else:
                rec.record(
                    Candidate(
                        id=candidate_id(backend, scheme, ratio),
                        backend=backend,
                        quantization=scheme,
                        prune=ratio,
                        status="does-not-fit",
                        reasons=fit.reasons,
                        peak_bytes=fit.estimated_peak_bytes,
                    ),
                    save=False,
                )
    rec.save()
    total, done_count = sum(len(v) for v in survivors.values()), 0
    for ratio, group in survivors.items():
        report(Progress("converting", None, done_count, total, f"{len(group)} variant(s) pruned {ratio:.0%}"))

        def relay(p: Progress, base: int = done_count, label: str = f"(pruned {ratio:.0%})") -> None:
            report(Progress(p.step, p.variant, base + p.done, total, label))

        def measured(added: Added, ratio: float = ratio) -> None:
            nonlocal done_count
            if added.failed is not None:
                f = added.failed
                rec.record(_refused(f.backend, f.quantization, ratio, f"{f.stage} failed: {f.error}"))
            elif added.variant is not None:
                report(Progress("measuring", added.variant.id, done_count, total))
                latency = host_latency(added.variant, added.root, added.golden_inputs) if host else None
                rec.record(judge(added.variant, added.root, profile, request, host=host, latency_s=latency))
            done_count += 1

        try:
            convert(
                source, [], [], workdir / f"pruned{round(ratio * 100)}",
                _with(options, ratio, profile, request.max_accuracy_drop), overwrite=True, progress=relay,
                pairs=group, on_variant=measured,
            )  # fmt: skip
        except BundleError:  # every variant of the group failed: each is recorded with its error
            if any(candidate_id(b, q, ratio) in rec.pending for b, q in group):
                raise
    report(Progress("ranking", None, total, total))
    return rec.plan()


def plan_language_model(
    source: ModelSource,
    request: PlanRequest,
    profile: DeviceProfile,
    options: ConvertOptions,
    workdir: Path,
    *,
    source_file: Path | None = None,
    progress: ProgressCallback | None = None,
    done: Sequence[Candidate] = (),
    checkpoint: PlanSink | None = None,
) -> Plan:
    """Plan for an LLM: each quantization converted and measured (KL, top-1, perplexity) once, then judged at
    each context length. The accuracy drop is 1 - top-1 agreement with the unquantized model. With the source's
    GGUF file, a quantization that fits at no context is dropped before it is converted. Candidates in `done`
    are taken as they are; each new decision goes to `checkpoint`."""
    report = progress if progress is not None else (lambda _p: None)
    backend = request.backends[0]
    contexts = request.contexts

    def ids(scheme: QuantScheme) -> list[str]:
        return [candidate_id(backend, scheme, 0.0, ctx) for ctx in contexts]

    rec = _Recorder(request, profile, [i for s in request.quantizations for i in ids(s)], done, checkpoint)
    todo = tuple(s for s in request.quantizations if not all([rec.reuse(i) for i in ids(s)]))
    dropped, schemes = _prefit_llm(source_file, request, profile, todo) if source_file else ([], todo)
    for candidate in dropped:
        rec.record(candidate, save=False)
    rec.save()
    total = len(schemes)
    if not schemes:
        return rec.plan()

    def relay(p: Progress) -> None:
        report(Progress(p.step, p.variant, p.done, total))

    def measured(added: Added) -> None:
        if added.failed is not None:
            f = added.failed
            for ctx in contexts:
                rec.record(_refused(f.backend, f.quantization, 0.0, f"{f.stage} failed: {f.error}", ctx))
        elif added.variant is not None:
            for ctx in contexts:
                rec.record(judge(added.variant, added.root, profile, request, context=ctx))

    pairs = [(backend, s) for s in dict.fromkeys(schemes)]
    try:
        convert(
            source, [], [], workdir / "llm", replace(options, allow_failed=True), overwrite=True, progress=relay,
            pairs=pairs, on_variant=measured,
        )  # fmt: skip
    except BundleError:  # every quantization failed: each is recorded with its error
        if rec.pending:
            raise
    report(Progress("ranking", None, total, total))
    return rec.plan()


def _prefit_llm(
    source_file: Path, request: PlanRequest, profile: DeviceProfile, schemes: Sequence[QuantScheme]
) -> tuple[list[Candidate], tuple[QuantScheme, ...]]:
    """Estimate each quantization from the source GGUF (weights scaled by bits per weight): drop what cannot fit."""
    from device_profiles.gguf_header import FILE_TYPES, read_gguf_header

    file_type = read_gguf_header(source_file).get("general.file_type", 0)
    # a file type we do not know (or a malformed header value) is estimated as f32: the largest, never too small
    name = FILE_TYPES.get(file_type, "f32") if isinstance(file_type, int) else "f32"
    source_scheme = QuantScheme(name) if name in {q.value for q in QuantScheme} else QuantScheme.F32
    facts = ModelFacts.of_files(request.backends[0], source_scheme, [source_file])
    dropped: list[Candidate] = []
    kept = []
    for scheme in schemes:
        fits = [check_fit(profile, facts.with_quantization(scheme), context=ctx) for ctx in request.contexts]
        if any(_maybe_fits(f, profile) for f in fits):
            kept.append(scheme)
            continue
        dropped += [
            Candidate(
                id=candidate_id(request.backends[0], scheme, 0.0, ctx),
                backend=request.backends[0],
                quantization=scheme,
                context=ctx,
                status="does-not-fit",
                reasons=f.reasons,
                peak_bytes=f.estimated_peak_bytes,
            )
            for ctx, f in zip(request.contexts, fits, strict=True)
        ]
    return dropped, tuple(kept)


def _maybe_fits(fit: FitReport, profile: DeviceProfile) -> bool:
    """Weights scaled by bits per weight are a rough guess: only a clear miss is dropped unconverted."""
    memory_only = all(r.startswith("needs ") for r in fit.reasons)
    return fit.fits or (memory_only and fit.estimated_peak_bytes <= profile.budget_bytes * PREFIT_MARGIN)


def _refused(backend: Backend, scheme: QuantScheme, ratio: float, why: str, context: int | None = None) -> Candidate:
    return Candidate(
        id=candidate_id(backend, scheme, ratio, context), backend=backend, quantization=scheme, prune=ratio,
        context=context, status="refused", reasons=(why,),
    )  # fmt: skip


def _parameters(source: ModelSource, ratio: float) -> int:
    path = getattr(source, "path", None)
    if not isinstance(source, TorchSource):  # an existing file of fp32 weights: they are what they are
        return Path(path).stat().st_size // 4 if path is not None else 0
    module = prune_structured(source.module, source.example_inputs, ratio) if ratio else source.module
    return parameter_count(module)


def _with(options: ConvertOptions, ratio: float, profile: DeviceProfile, drop: float) -> ConvertOptions:
    return replace(options, prune=ratio, profiles=(profile,), max_accuracy_drop=drop, allow_failed=True)
