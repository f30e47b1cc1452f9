"""Accuracy verification: compare a variant's outputs with the reference, metric by metric.

Only numpy here, so a device can re-check a bundle's golden set without the host's converter stack.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from device_profiles.host import host_isa
from edge_sdk.bundle import AccuracyReport, Metric
from edge_sdk.types import QuantScheme, TensorSpec

MAX_CHUNK = 256


@dataclass(frozen=True)
class Tolerance:
    max_rel_error: float  # max |out - ref| as a share of max |ref|
    min_cosine: float  # mean per-sample cosine similarity
    max_accuracy_drop: float  # absolute, on the task metric (and on top-1 agreement)


# Defaults per scheme: fp32 must match to float rounding; quantized variants are judged on what users see.
DEFAULT_TOLERANCE: dict[QuantScheme, Tolerance] = {
    QuantScheme.NONE: Tolerance(1e-4, 0.99999, 0.005),
    QuantScheme.FP16: Tolerance(1e-2, 0.9999, 0.01),
    QuantScheme.INT8_DYNAMIC: Tolerance(0.35, 0.99, 0.02),
    QuantScheme.INT8_STATIC: Tolerance(0.35, 0.99, 0.02),
}


# A pruned model is a different, smaller model: its logits move, so it is judged on its decisions.
PRUNED_TOLERANCE = Tolerance(max_rel_error=1.0, min_cosine=0.95, max_accuracy_drop=0.02)


def tolerance_for(scheme: QuantScheme, max_accuracy_drop: float | None = None, *, pruned: bool = False) -> Tolerance:
    base = PRUNED_TOLERANCE if pruned else DEFAULT_TOLERANCE.get(scheme, DEFAULT_TOLERANCE[QuantScheme.INT8_STATIC])
    if max_accuracy_drop is None:
        return base
    return Tolerance(base.max_rel_error, base.min_cosine, max_accuracy_drop)


def chunks(inputs: Mapping[str, np.ndarray], specs: tuple[TensorSpec, ...]) -> list[dict[str, np.ndarray]]:
    """Split along the sample axis into batches the model accepts (a fixed batch dim is honoured)."""
    count = len(next(iter(inputs.values())))
    first = specs[0].shape[0] if specs and specs[0].shape else None
    size = first if isinstance(first, int) else MAX_CHUNK
    return [
        {k: v[i : i + size] for k, v in inputs.items()}
        for i in range(0, count - (size - 1 if isinstance(first, int) else 0), size)
    ]


def concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def compare(
    reference: Mapping[str, np.ndarray],
    outputs: Mapping[str, np.ndarray],
    tolerance: Tolerance,
    *,
    labels: np.ndarray | None = None,
    reference_name: str,
) -> AccuracyReport:
    """Metrics over the first output (the model's prediction), each with its tolerance and verdict."""
    name = next(iter(reference))
    ref = reference[name].astype(np.float64)
    out = np.asarray(outputs[name]).astype(np.float64)
    n = min(len(ref), len(out))
    ref, out = ref[:n], out[:n]
    scale = float(np.abs(ref).max()) or 1.0
    rel = float(np.abs(out - ref).max()) / scale
    flat_r, flat_o = ref.reshape(n, -1), out.reshape(n, -1)
    denom = np.linalg.norm(flat_r, axis=1) * np.linalg.norm(flat_o, axis=1)
    cos = float(np.mean(np.sum(flat_r * flat_o, axis=1) / np.where(denom == 0, 1.0, denom)))
    metrics = [
        Metric(
            name="max_rel_error",
            value=rel,
            tolerance=tolerance.max_rel_error,
            higher_is_better=False,
            passed=rel <= tolerance.max_rel_error,
        ),
        Metric(
            name="cosine_similarity",
            value=cos,
            tolerance=1 - tolerance.min_cosine,
            higher_is_better=True,
            passed=cos >= tolerance.min_cosine,
        ),
    ]
    if ref.ndim == 2 and ref.shape[1] > 1:  # class scores: judge the decision, not only the numbers
        agree = float(np.mean(ref.argmax(1) == out.argmax(1)))
        metrics.append(_drop_metric("top1_agreement", agree, 1.0, tolerance.max_accuracy_drop))
        if labels is not None:
            labels = labels[:n]
            metrics.append(
                _drop_metric(
                    "accuracy",
                    float(np.mean(out.argmax(1) == labels)),
                    float(np.mean(ref.argmax(1) == labels)),
                    tolerance.max_accuracy_drop,
                )
            )
    return AccuracyReport(
        reference=reference_name,
        samples=n,
        metrics=tuple(metrics),
        passed=all(m.passed for m in metrics),
        measured_on=host_isa(),
    )


def _drop_metric(name: str, value: float, reference: float, drop: float) -> Metric:
    # A tiny epsilon so that float noise in the mean never fails an exact-equality gate.
    return Metric(
        name=name,
        value=value,
        reference=reference,
        tolerance=drop,
        higher_is_better=True,
        passed=value >= reference - drop - 1e-9,
    )


def summary(report: AccuracyReport) -> str:
    """One line a person can read: 'accuracy 0.978 (ref 0.981, -0.003 ≤ 0.02) ✓ ...'."""
    parts = []
    for m in report.metrics:
        mark = "ok" if m.passed else "FAIL"
        ref = f" (ref {m.reference:.4g})" if m.reference is not None else ""
        parts.append(f"{m.name} {m.value:.4g}{ref} tol {m.tolerance:.3g} {mark}")
    return "; ".join(parts)


# On the device the variant must reproduce what it produced on the host: engine builds differ in rounding
# only, so the bound is tight on values and allows one flipped near-tie in the decision.
DEVICE_TOLERANCE = Tolerance(max_rel_error=0.02, min_cosine=0.999, max_accuracy_drop=0.07)
