"""The metrics a variant is judged on, chosen by the model's task (numpy only: a device re-checks with them).

    classification   top-1 agreement with the reference, and accuracy when labels are given
    embedding        cosine per sample (mean and worst) and nearest-neighbour agreement within the set
    regression, ...  max absolute / relative error and cosine over each whole output
    tensor           (task not said) values of the first output, and decisions when it looks like class scores

A failing metric's refusal names the option that can change it (`advice`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from device_profiles.host import host_isa
from edge_sdk.bundle import AccuracyReport, Metric
from edge_sdk.types import Task


@dataclass(frozen=True)
class Tolerance:
    max_rel_error: float  # max |out - ref| as a share of max |ref|
    min_cosine: float  # mean per-sample cosine similarity
    max_accuracy_drop: float  # absolute, on the task metric (and on top-1 agreement)

    @property
    def worst_cosine(self) -> float:
        """The worst single sample may fall short by twice what the mean may."""
        return 1 - 2 * (1 - self.min_cosine)


def compare(
    reference: Mapping[str, np.ndarray],
    outputs: Mapping[str, np.ndarray],
    tolerance: Tolerance,
    *,
    labels: np.ndarray | None = None,
    reference_name: str,
    task: Task = Task.TENSOR,
) -> AccuracyReport:
    """Each of the task's metrics with its tolerance and verdict."""
    name = next(iter(reference))
    ref = reference[name].astype(np.float64)
    out = np.asarray(outputs[name]).astype(np.float64)
    n = min(len(ref), len(out)) if ref.ndim else 1
    if ref.ndim:
        ref, out = ref[:n], out[:n]
    if task is Task.CLASSIFICATION:
        metrics = _decisions(ref, out, labels, tolerance)
    elif task is Task.EMBEDDING:
        metrics = _embedding(ref, out, tolerance)
    elif task is Task.REGRESSION:
        metrics = _values(reference, outputs, tolerance)
    else:
        metrics = [_rel_error(ref, out, tolerance), _cosine("cosine_similarity", _row_cosines(ref, out), tolerance)]
        if ref.ndim == 2 and ref.shape[1] > 1:  # looks like class scores: judge the decision too
            metrics += _decisions(ref, out, labels, tolerance)
    metrics = [_finite(m) for m in metrics]
    return AccuracyReport(
        reference=reference_name,
        samples=n,
        metrics=tuple(metrics),
        passed=all(m.passed for m in metrics),
        measured_on=host_isa(),
    )


def _finite(metric: Metric) -> Metric:
    """JSON has no inf or NaN (they would be written as null and the manifest could not be read back): an
    overflowing or undefined value is kept as the largest float, its verdict as computed (NaN never passes)."""
    if np.isfinite(metric.value):
        return metric
    big = np.finfo(np.float64).max
    return metric.model_copy(update={"value": -big if metric.value == -np.inf else big})


def _decisions(ref: np.ndarray, out: np.ndarray, labels: np.ndarray | None, tol: Tolerance) -> list[Metric]:
    ref2, out2 = ref.reshape(len(ref), -1), out.reshape(len(out), -1)
    metrics = [_drop_metric("top1_agreement", float(np.mean(ref2.argmax(1) == out2.argmax(1))), 1.0, tol)]
    if labels is not None:
        labels = labels[: len(ref2)]
        metrics.append(
            _drop_metric(
                "accuracy", float(np.mean(out2.argmax(1) == labels)), float(np.mean(ref2.argmax(1) == labels)), tol
            )
        )
    return metrics


def _embedding(ref: np.ndarray, out: np.ndarray, tol: Tolerance) -> list[Metric]:
    """Vectors are judged by direction and by what they are used for: finding the nearest other text."""
    cos = _row_cosines(ref, out)
    metrics = [
        _cosine("cosine_mean", cos, tol),
        Metric(
            name="cosine_min",
            value=float(cos.min()),
            tolerance=1 - tol.worst_cosine,
            higher_is_better=True,
            passed=float(cos.min()) >= tol.worst_cosine,
        ),
    ]
    if len(ref) > 2:
        metrics.append(_drop_metric("neighbour_agreement", float(np.mean(_nearest(ref) == _nearest(out))), 1.0, tol))
    return metrics


def _nearest(vectors: np.ndarray) -> np.ndarray:
    flat = vectors.reshape(len(vectors), -1)
    unit = flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-12)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    return np.asarray(sims.argmax(1))


def _values(reference: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray], tol: Tolerance) -> list[Metric]:
    """Every output, whole: boxes, masks and landmarks are numbers to reproduce, not scores to argmax."""
    worst_abs, worst_rel, allowed_abs, metrics = 0.0, 0.0, 0.0, []
    for name, r in reference.items():
        ref, out = r.astype(np.float64).reshape(-1), np.asarray(outputs[name]).astype(np.float64).reshape(-1)
        k = min(len(ref), len(out))
        ref, out = ref[:k], out[:k]
        err = float(np.abs(out - ref).max()) if k else 0.0
        scale = (float(np.abs(ref).max()) if k else 0.0) or 1.0
        worst_rel = max(worst_rel, err / scale)
        if err / scale >= worst_rel:  # the absolute error of the output that sets the relative one
            worst_abs, allowed_abs = err, tol.max_rel_error * scale
        denom = float(np.linalg.norm(ref) * np.linalg.norm(out))
        cos = float(ref @ out / denom) if denom else float(np.array_equal(ref, out))
        metrics.append(_cosine(f"cosine[{name}]", np.array([cos]), tol))
    # In the output's own units, bounded by what the relative bound allows at that output's scale.
    metrics.insert(0, Metric(name="max_abs_error", value=worst_abs, tolerance=allowed_abs, higher_is_better=False,
                             passed=worst_abs <= allowed_abs))  # fmt: skip
    metrics.insert(
        1,
        Metric(
            name="max_rel_error",
            value=worst_rel,
            tolerance=tol.max_rel_error,
            higher_is_better=False,
            passed=worst_rel <= tol.max_rel_error,
        ),
    )
    return metrics


def _row_cosines(ref: np.ndarray, out: np.ndarray) -> np.ndarray:
    n = max(len(ref), 1) if ref.ndim else 1
    flat_r, flat_o = ref.reshape(n, -1), out.reshape(n, -1)
    denom = np.linalg.norm(flat_r, axis=1) * np.linalg.norm(flat_o, axis=1)
    return np.asarray(np.sum(flat_r * flat_o, axis=1) / np.where(denom == 0, 1.0, denom))


def _rel_error(ref: np.ndarray, out: np.ndarray, tol: Tolerance) -> Metric:
    rel = float(np.abs(out - ref).max()) / (float(np.abs(ref).max()) or 1.0)
    return Metric(
        name="max_rel_error", value=rel, tolerance=tol.max_rel_error, higher_is_better=False,
        passed=rel <= tol.max_rel_error,
    )  # fmt: skip


def _cosine(name: str, cosines: np.ndarray, tol: Tolerance) -> Metric:
    value = float(np.mean(cosines))
    return Metric(
        name=name, value=value, tolerance=1 - tol.min_cosine, higher_is_better=True, passed=value >= tol.min_cosine
    )


def _drop_metric(name: str, value: float, reference: float, tol: Tolerance) -> Metric:
    # A tiny epsilon so that float noise in the mean never fails an exact-equality gate.
    return Metric(
        name=name,
        value=value,
        reference=reference,
        tolerance=tol.max_accuracy_drop,
        higher_is_better=True,
        passed=value >= reference - tol.max_accuracy_drop - 1e-9,
    )


def summary(report: AccuracyReport) -> str:
    """One line a person can read: 'accuracy 0.978 (ref 0.981) tol 0.02 ok; ...'."""
    parts = []
    for m in report.metrics:
        mark = "ok" if m.passed else "FAIL"
        ref = f" (ref {m.reference:.4g})" if m.reference is not None else ""
        parts.append(f"{m.name} {m.value:.4g}{ref} tol {m.tolerance:.3g} {mark}")
    return "; ".join(parts)


# What can move each failing metric: decisions have a user-set bound; values and directions are bounded per
# quantization (they measure rounding), so only a milder scheme, better calibration or the right task helps.
_DECISION_METRICS = ("top1_agreement", "accuracy", "neighbour_agreement")


def advice(report: AccuracyReport) -> str:
    failing = [m.name for m in report.metrics if not m.passed]
    tips = []
    if any(name in _DECISION_METRICS for name in failing):
        tips.append("raise the allowed drop (--max-accuracy-drop)")
    if any(name not in _DECISION_METRICS for name in failing):
        tips.append(
            "use a milder quantization (-q none or fp16) or give representative calibration and evaluation data "
            "(--calibration, --eval); "
            "if these metrics do not fit what the model outputs, say its task (--task classification, embedding, "
            "regression)"
        )
    return ("To pass: " + "; or ".join(tips) + ".") if tips else ""
