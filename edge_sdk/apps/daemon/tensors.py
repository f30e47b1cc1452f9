"""JSON <-> numpy for the tensor API, checked against the bundle's TensorSpecs."""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from edge_sdk.errors import InputError, NonFiniteInputError, choices
from edge_sdk.types import DType, TensorSpec


class TensorJSON(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dtype: DType
    shape: list[int]
    data: list[Any]  # flat or nested; reshaped to `shape`


class InferRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inputs: dict[str, TensorJSON]


def to_arrays(
    request: InferRequest, specs: tuple[TensorSpec, ...], *, allow_nonfinite: bool = False
) -> dict[str, np.ndarray]:
    """Arrays of the request's inputs; NaN and ±Infinity (JSON's NaN, Infinity, 1e999) are refused unless allowed."""
    by_name = {s.name: s for s in specs}
    arrays = {}
    for name, tensor in request.inputs.items():
        spec = by_name.get(name)
        if spec is None:
            raise InputError(f"unknown input {name!r}; the model takes {choices(by_name)}")
        try:
            array = np.asarray(tensor.data, dtype=tensor.dtype.numpy).reshape(tensor.shape)
        except (ValueError, TypeError, OverflowError) as exc:
            raise InputError(
                f"input {name!r}: data does not form a {tensor.dtype.value} tensor of shape {tensor.shape}: {exc}"
            ) from None
        if not allow_nonfinite and array.dtype.kind in "fc" and not np.isfinite(array).all():
            bad = int(array.size - np.count_nonzero(np.isfinite(array)))
            raise NonFiniteInputError(
                f"input {name!r} holds {bad} NaN or infinite value(s); inputs must be finite "
                "(start the daemon with --allow-nonfinite to pass them to the model)"
            )
        arrays[name] = array
    return arrays


def to_json(arrays: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    return {
        name: {"dtype": DType.of(a.dtype).value, "shape": list(a.shape), "data": a.reshape(-1).tolist()}
        for name, a in arrays.items()
    }
