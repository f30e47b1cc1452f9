"""Accuracy-aware quantization: when a fully quantized variant misses the user's bound, keep the layers it is most
sensitive to in float until it meets it (NNCF's quantize_with_accuracy_control, LiteRT's per-layer scopes).

A step the conversion loop calls, for any exporter that can name its layers (`Exporter.layers`) and any
verifier: each layer's sensitivity is the verdict of the variant with only that layer quantized, measured on the
evaluation data by the variant's own runtime; then the k most sensitive stay float for the smallest k that passes
(searched by doubling, then bisection). The result records which layers stayed float, the trials and what was
measured, in the recipe's options.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from converters.exporter import Exporter, ExportRequest, ExportResult
from converters.progress import Progress, ProgressCallback
from converters.verifier import Exported, Reference, Verdict
from edge_sdk.bundle import AccuracyReport
from edge_sdk.errors import ConfigError
from edge_sdk.types import Backend


@dataclass(frozen=True)
class Trial:
    keep_float: tuple[str, ...]
    result: ExportResult
    verdict: Verdict

    @property
    def accuracy(self) -> AccuracyReport:
        """The measured report; a variant bundled without one (nothing to measure against) never gets here."""
        if self.verdict.accuracy is None:
            raise ConfigError("mixed precision needs a measured variant; this one has no accuracy report")
        return self.verdict.accuracy

    @property
    def passed(self) -> bool:
        return self.accuracy.passed


def shortfall(report: AccuracyReport) -> float:
    """How far a verdict is from perfect, each metric in units of its tolerance (≥ 1 on some metric: it fails).
    A continuous score, so layers rank even when no decision flips."""
    total = 0.0
    for m in report.metrics:
        tol = max(m.tolerance, 1e-9)
        if m.higher_is_better:
            total += max(0.0, (1.0 if m.reference is None else m.reference) - m.value) / tol
        elif m.reference:  # a bound relative to a reference (perplexity: variant / reference - 1)
            total += max(0.0, m.value / m.reference - 1.0) / tol
        else:
            total += max(0.0, m.value) / tol
    return total


@dataclass
class _Search:
    exporter: Exporter
    request: ExportRequest
    reference: Reference
    variant_id: str
    backend: Backend
    report: ProgressCallback
    position: tuple[int, int]  # the variant's place in the loop, for the progress display
    trials: int = 0

    def run(self, keep_float: tuple[str, ...], what: str) -> Trial:
        self.report(Progress("mixed precision", self.variant_id, *self.position, what))
        request = replace(self.request, keep_float=keep_float)
        result = self.exporter.export(request)
        exported = Exported(self.variant_id, self.backend, request.quantization, result, request.workdir)
        self.trials += 1
        return Trial(keep_float, result, self.reference.measure(exported))


def keep_sensitive_layers_float(
    exporter: Exporter,
    request: ExportRequest,
    reference: Reference,
    first: Trial,
    *,
    variant_id: str,
    backend: Backend,
    progress: ProgressCallback,
    position: tuple[int, int],
) -> Trial:
    """The variant with the fewest layers in float that passes, or `first` (failed) when no mix passes short of
    keeping every layer float, which would no longer be the quantization asked for."""
    layers = exporter.layers(request)
    if len(layers) < 2 or first.passed:
        return first
    search = _Search(exporter, request, reference, variant_id, backend, progress, position)
    sensitivity: dict[str, float] = {}
    for i, layer in enumerate(layers):
        alone = search.run(tuple(x for x in layers if x != layer), f"sensitivity {i + 1}/{len(layers)}: {layer}")
        sensitivity[layer] = shortfall(alone.accuracy)
    ranked = sorted(layers, key=lambda x: -sensitivity[x])

    def attempt(k: int) -> Trial:
        return search.run(tuple(ranked[:k]), f"keeping {k} of {len(layers)} layers float")

    best: Trial | None = None
    low, k = 0, 1  # `low` layers in float is known to fail; try 1, 2, 4, ... up to all but one
    while True:
        trial = attempt(k)
        if trial.passed:
            best = trial
            break
        low = k
        if k >= len(layers) - 1:
            break
        k = min(2 * k, len(layers) - 1)
    if best is None:
        return _annotated(first, first, sensitivity, search.trials, len(layers), found=False)
    high = len(best.keep_float)
    while high - low > 1:  # bisection between the last failing and the first passing count
        mid = (low + high) // 2
        trial = attempt(mid)
        if trial.passed:
            best, high = trial, mid
        else:
            low = mid
    last_exported = trial
    if last_exported is not best:  # the workdir holds the last export: write the chosen one again
        best = search.run(best.keep_float, f"writing the variant with {high} layers float")
    return _annotated(best, first, sensitivity, search.trials, len(layers), found=True)


def _annotated(
    chosen: Trial, first: Trial, sensitivity: dict[str, float], trials: int, count: int, *, found: bool
) -> Trial:
    """Record the search in the recipe: which layers stayed float, why, and what each step measured."""
    ranked = sorted(sensitivity.items(), key=lambda kv: -kv[1])
    options = {
        **chosen.result.recipe.options,
        "accuracy_aware": (
            f"kept {len(chosen.keep_float)} of {count} layers float to meet the bound ({trials} trials)"
            if found
            else f"no mix short of all {count} layers float met the bound ({trials} trials)"
        ),
        "float_layers": ",".join(chosen.keep_float),
        "sensitivity": ",".join(f"{name}={score:.3g}" for name, score in ranked[:8]),
        "all_layers_int8": _metrics(first.accuracy),
        "measured": _metrics(chosen.accuracy),
        "size_bytes": str(sum(Path(p).stat().st_size for p in chosen.result.files.values())),
    }
    chosen.result.recipe = chosen.result.recipe.model_copy(update={"options": options})
    return chosen


def _metrics(report: AccuracyReport) -> str:
    return ",".join(f"{m.name}={m.value:.4g}" for m in report.metrics)
