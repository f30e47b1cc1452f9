"""Accuracy verification: compare a variant's outputs with the reference, metric by metric.

Only numpy here, so a device can re-check a bundle's golden set without the host's converter stack.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from converters.metrics import Tolerance, compare, summary
from edge_sdk.errors import InputError
from edge_sdk.types import QuantScheme, TensorSpec

__all__ = ["DEVICE_TOLERANCE", "Tolerance", "chunks", "compare", "concat", "summary", "take", "tolerance_for"]

MAX_CHUNK = 256


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


def sample_count(inputs: Mapping[str, np.ndarray], specs: Sequence[TensorSpec]) -> int:
    """Samples in `inputs`, read along each batched input's own sample axis (axis 0 for an array without a
    spec); they must agree."""
    by_name = {s.name: s for s in specs}
    counts = {
        k: by_name[k].samples(v) if k in by_name else (len(v) if v.ndim else None)  # no spec: axis 0
        for k, v in inputs.items()
    }
    found = {n for n in counts.values() if n is not None}
    if len(found) > 1:
        raise InputError(f"the inputs hold different numbers of samples along their sample axes: {counts}")
    return found.pop() if found else 1  # nothing batched: the inputs are one sample


def take(arrays: Mapping[str, np.ndarray], specs: Sequence[TensorSpec], start: int, stop: int) -> dict[str, np.ndarray]:
    """Samples start..stop of every batched array; unbatched ones whole. An array without a spec: axis 0."""
    by_name = {s.name: s for s in specs}
    return {
        k: by_name[k].take(v, start, stop) if k in by_name else v[start:stop] if v.ndim else v
        for k, v in arrays.items()
    }


def chunks(
    inputs: Mapping[str, np.ndarray], specs: Sequence[TensorSpec], size: int = MAX_CHUNK
) -> list[dict[str, np.ndarray]]:
    """Split along each input's sample axis into batches the model accepts (a fixed batch dim is honoured, a
    partial last batch then dropped); an input with no sample axis goes whole into every batch."""
    count = sample_count(inputs, specs)
    batched = [s for s in specs if s.sample_axis is not None]
    fixed = batched[0].shape[batched[0].sample_axis] if batched else None  # type: ignore[index]
    if not batched:
        return [dict(inputs)]
    step = fixed if isinstance(fixed, int) else size
    stop = count - (step - 1) if isinstance(fixed, int) else count
    return [take(inputs, specs, i, i + step) for i in range(0, max(stop, 0), step)]


def concat(parts: list[dict[str, np.ndarray]], specs: Sequence[TensorSpec] = ()) -> dict[str, np.ndarray]:
    """Join per-batch outputs along each output's sample axis (axis 0 without a spec); an unbatched output
    (e.g. a summary over the batch) is the last batch's."""
    axes = {s.name: s.sample_axis for s in specs}
    joined = {}
    for k in parts[0]:
        axis = axes.get(k, 0) if parts[0][k].ndim else None
        joined[k] = parts[-1][k] if axis is None else np.concatenate([p[k] for p in parts], axis=axis)
    return joined


# On the device the variant must reproduce what it produced on the host: engine builds differ in rounding
# only, so the bound is tight on values and allows one flipped near-tie in the decision.
DEVICE_TOLERANCE = Tolerance(max_rel_error=0.02, min_cosine=0.999, max_accuracy_drop=0.07)
