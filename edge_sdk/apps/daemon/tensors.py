"""JSON <-> numpy for the tensor API, checked against the bundle's TensorSpecs."""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from edge_sdk.errors import InputError, choices
from edge_sdk.types import DType, TensorSpec


class TensorJSON(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dtype: DType
    shape: list[int]
    data: list[Any]  # flat or nested; reshaped to `shape`


class InferRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inputs: dict[str, TensorJSON]


def to_arrays(request: InferRequest, specs: tuple[TensorSpec, ...]) -> dict[str, np.ndarray]:
    by_name = {s.name: s for s in specs}
    arrays = {}
    for name, tensor in request.inputs.items():
        spec = by_name.get(name)
        if spec is None:
            raise InputError(f"unknown input {name!r}; the model takes {choices(by_name)}")
        try:
            array = np.asarray(tensor.data, dtype=tensor.dtype.numpy).reshape(tensor.shape)
        except (ValueError, TypeError) as exc:
            raise InputError(
                f"input {name!r}: data does not form a {tensor.dtype.value} tensor of shape {tensor.shape}: {exc}"
            ) from None
        arrays[name] = array
    return arrays


def to_json(arrays: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    return {
        name: {"dtype": DType.of(a.dtype).value, "shape": list(a.shape), "data": a.reshape(-1).tolist()}
        for name, a in arrays.items()
    }
