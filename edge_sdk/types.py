"""Enums and frozen value objects shared by every package."""

from __future__ import annotations

from enum import StrEnum
from typing import TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict

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


class QuantScheme(StrEnum):
    """How weights (and maybe activations) are stored. Which backend takes which is the exporter's call."""

    NONE = "none"
    FP16 = "fp16"
    INT8_DYNAMIC = "int8-dynamic"
    INT8_STATIC = "int8-static"


class Task(StrEnum):
    TENSOR = "tensor"
    CLASSIFICATION = "classification"
    TEXT_GENERATION = "text-generation"
    EMBEDDING = "embedding"


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
