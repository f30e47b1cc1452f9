"""The fit planner: enumerate backend × quantization × pruning (× context for LLMs), drop what cannot fit the
profile before converting it, convert and measure what can, and rank by the user's objective.

A plan is a JSON document holding its own request, so it can be made again (`edge-sdk plan --from plan.json`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from converters.dominance import dominated_reason, dominating
from converters.pipeline import Added, ConvertOptions, convert, get_exporter

# The plan's types live in converters.plan_types; importers of converters.plan keep finding them here.
from converters.plan_types import (
    Candidate,
    Objective,
    Plan,
    PlanRequest,
    PlanSink,
    Status,
    candidate_id,
    rank,
)
from converters.progress import Progress, ProgressCallback
from converters.prune import check_ratio, parameter_count, prune_structured
from converters.sources import ModelSource, TorchSource
from converters.verifier import Exported, provisional_variant
from device_profiles import DeviceProfile
from device_profiles.estimate import BITS_PER_WEIGHT, ModelFacts
from device_profiles.fit import check_fit
from edge_sdk.bundle import AccuracyReport, FitReport, Variant
from edge_sdk.errors import BackendUnavailableError, BundleError, ConfigError, EdgeSDKError
from edge_sdk.types import Backend, QuantScheme

__all__ = ["Candidate", "Objective", "Plan", "PlanRequest", "PlanSink", "Status", "candidate_id", "rank"]

PREFIT_MARGIN = 1.15  # an LLM estimated from another quantization's file is converted unless clearly too big


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
    latencies: dict[str, float | None] = {}  # host seconds the screen timed, per variant id
    for ratio, group in survivors.items():
        report(Progress("converting", None, done_count, total, f"{len(group)} variant(s) pruned {ratio:.0%}"))

        def relay(p: Progress, base: int = done_count, label: str = f"(pruned {ratio:.0%})") -> None:
            report(Progress(p.step, p.variant, base + p.done, total, label))

        def screen(exported: Exported, golden: Mapping[str, np.ndarray], ratio: float = ratio) -> bool:
            """Time the export and stop here if a measured candidate already beats it on every objective."""
            nonlocal done_count
            files = list(exported.result.files.values())
            latency = host_latency(provisional_variant(exported), exported.workdir, golden) if host else None
            latencies[exported.variant_id] = latency
            facts = ModelFacts.of_files(
                exported.backend, exported.quantization, files, exported.result.inputs, exported.result.outputs
            )
            fit = check_fit(profile, facts, host=host, host_latency_s=latency)
            size, predicted = sum(p.stat().st_size for p in files), fit.predicted_latency_ms
            winner = dominating(size, predicted, rec.candidates.values())
            if winner is None or predicted is None:
                return True
            rec.record(
                Candidate(
                    id=candidate_id(exported.backend, exported.quantization, ratio), backend=exported.backend,
                    quantization=exported.quantization, prune=ratio, status="dominated",
                    reasons=(dominated_reason(winner, size, predicted),), size_bytes=size,
                    peak_bytes=fit.estimated_peak_bytes, latency_ms=predicted,
                )
            )  # fmt: skip
            done_count += 1
            return False

        def measured(added: Added, ratio: float = ratio) -> None:
            nonlocal done_count
            if added.failed is not None:
                f = added.failed
                rec.record(_refused(f.backend, f.quantization, ratio, f"{f.stage} failed: {f.error}"))
            elif added.variant is not None:
                report(Progress("measuring", added.variant.id, done_count, total))
                v = added.variant
                timed = v.id in latencies and "float_layers" not in v.recipe.options  # the very files the screen ran
                latency = (
                    latencies[v.id] if timed else host_latency(v, added.root, added.golden_inputs) if host else None
                )
                rec.record(judge(v, added.root, profile, request, host=host, latency_s=latency))
            done_count += 1

        try:
            convert(
                source, [], [], workdir / f"pruned{round(ratio * 100)}",
                _with(options, ratio, profile, request.max_accuracy_drop), overwrite=True, progress=relay,
                pairs=group, on_variant=measured, screen=screen,
            )  # fmt: skip
        except BundleError:  # every variant of the group failed or was dominated: each is recorded
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
