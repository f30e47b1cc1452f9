"""Enums and frozen value objects shared by every package."""

from __future__ import annotations

from enum import StrEnum
from typing import TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, model_validator

from edge_sdk.errors import ConfigError, choices

E = TypeVar("E", bound=StrEnum)


def parse_enum(enum: type[E], value: str | E, what: str) -> E:
    """Turn user text into an enum member, or a ConfigError listing what is valid."""
    if isinstance(value, enum):
        return value
    try:
        return enum(str(value).strip().lower())
    except ValueError:
        raise ConfigError(f"unknown {what} {value!r}; valid: {choices(m.value for m in enum)}") from None


class Backend(StrEnum):
    """An inference engine a bundle variant is built for."""

    ONNX = "onnx"
    EXECUTORCH = "executorch"
    GGUF = "gguf"
    TFLITE = "tflite"


class CalibrationMethod(StrEnum):
    """How static int8 turns calibration activations into ranges: their extremes, a percentile of them, or the
    range that loses least information (KL divergence of the histogram)."""

    MINMAX = "minmax"
    ENTROPY = "entropy"
    PERCENTILE = "percentile"


class QuantScheme(StrEnum):
    """How weights (and maybe activations) are stored. Which backend takes which is the exporter's call."""

    NONE = "none"
    FP16 = "fp16"
    INT8_DYNAMIC = "int8-dynamic"
    INT8_STATIC = "int8-static"
    # GGUF (llama.cpp) weight types, named as llama.cpp users know them
    F32 = "f32"
    BF16 = "bf16"
    Q8_0 = "q8_0"
    Q4_0 = "q4_0"
    Q4_1 = "q4_1"
    Q5_0 = "q5_0"
    Q5_1 = "q5_1"
    Q2_K = "q2_k"
    Q3_K_S = "q3_k_s"
    Q3_K_M = "q3_k_m"
    Q3_K_L = "q3_k_l"
    Q4_K_S = "q4_k_s"
    Q4_K_M = "q4_k_m"
    Q5_K_S = "q5_k_s"
    Q5_K_M = "q5_k_m"
    Q6_K = "q6_k"
    # Language models on phones: ExecuTorch's 8-bit dynamic activations with 4-bit grouped weights (torchao),
    # and ONNX Runtime's 4-bit blocked weights (MatMulNBits)
    INT8DA_INT4W = "8da4w"
    INT4 = "int4"


class Task(StrEnum):
    """What a model's outputs mean: it decides the metrics a variant is judged on."""

    TENSOR = "tensor"  # not said: judged as before (values, and decisions when the output looks like scores)
    CLASSIFICATION = "classification"
    TEXT_GENERATION = "text-generation"
    EMBEDDING = "embedding"
    REGRESSION = "regression"  # regression, detection, segmentation: values over the whole output


class DType(StrEnum):
    FLOAT32 = "float32"
    FLOAT16 = "float16"
    INT64 = "int64"
    INT32 = "int32"
    INT8 = "int8"
    UINT8 = "uint8"
    BOOL = "bool"

    @classmethod
    def of(cls, array_dtype: np.dtype | type) -> DType:
        name = np.dtype(array_dtype).name
        try:
            return cls(name)
        except ValueError:
            raise ConfigError(f"unsupported tensor dtype {name!r}; valid: {choices(cls)}") from None

    @property
    def numpy(self) -> np.dtype:
        return np.dtype(self.value)


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


def parse_shape(text: str) -> tuple[int, ...]:
    """'1x1x8x8' -> (1, 1, 8, 8)."""
    try:
        dims = tuple(int(part) for part in text.lower().replace(",", "x").split("x"))
    except ValueError:
        raise ConfigError(f"bad shape {text!r}; write it like 1x1x8x8") from None
    if not dims or any(d <= 0 for d in dims):
        raise ConfigError(f"bad shape {text!r}; every dimension must be a positive integer")
    return dims
