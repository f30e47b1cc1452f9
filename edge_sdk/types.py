"""Enums and frozen value objects shared by every package."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, model_validator

from edge_sdk.enums import Backend, CalibrationMethod, DType, QuantScheme, Task, parse_enum, parse_shape

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "Backend",
    "CalibrationMethod",
    "DType",
    "Dim",
    "QuantScheme",
    "Task",
    "TensorSpec",
    "parse_enum",
    "parse_shape",
]

Dim = int | str
"""A tensor dimension: a fixed size, or a name for a size chosen at run time ('batch')."""


class TensorSpec(BaseModel):
    """Name, dtype and shape of one model input or output."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    dtype: DType
    shape: tuple[Dim, ...]
    # The axis that indexes samples, or None (a scalar, a state, a side input): nothing slices an unbatched input.
    # Schema 1 had no such field and sliced axis 0 of every input: absent, it means axis 0 (None for a scalar).
    sample_axis: int | None = None

    @model_validator(mode="before")
    @classmethod
    def _default_axis(cls, data: object) -> object:
        if isinstance(data, dict) and "sample_axis" not in data:
            data = {**data, "sample_axis": 0 if data.get("shape") else None}
        return data

    @model_validator(mode="after")
    def _axis_in_range(self) -> TensorSpec:
        if self.sample_axis is not None and not 0 <= self.sample_axis < len(self.shape):
            raise ValueError(
                f"input {self.name!r} has {len(self.shape)} axes; its sample axis {self.sample_axis} does not exist"
            )
        return self

    @property
    def batched(self) -> bool:
        return self.sample_axis is not None

    def samples(self, array: np.ndarray) -> int | None:
        """How many samples `array` holds along this input's sample axis (None when it has none)."""
        if self.sample_axis is None or array.ndim <= self.sample_axis:
            return None
        return int(array.shape[self.sample_axis])

    def take(self, array: np.ndarray, start: int, stop: int) -> np.ndarray:
        """Samples start..stop of `array`; an unbatched input (a scalar, a state, a side input) is passed whole."""
        if self.sample_axis is None or array.ndim <= self.sample_axis:
            return array
        index = [slice(None)] * array.ndim
        index[self.sample_axis] = slice(start, stop)
        return array[tuple(index)]

    def describe(self) -> str:
        dims = "x".join(str(d) for d in self.shape) or "scalar"
        return f"{self.name}: {self.dtype.value}[{dims}]"

    def mismatch(self, array: np.ndarray) -> str | None:
        """Why `array` does not fit this spec, or None when it does."""
        if array.dtype != self.dtype.numpy:
            return f"input {self.name!r} has dtype {array.dtype}, expected {self.dtype.value}"
        if len(array.shape) != len(self.shape) or any(
            isinstance(want, int) and want != got for want, got in zip(self.shape, array.shape, strict=True)
        ):
            got = "x".join(map(str, array.shape))
            return f"input {self.name!r} has shape {got}, expected {self.describe()}"
        return None
