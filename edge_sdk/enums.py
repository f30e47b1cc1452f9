"""The kernel's enums and the parsers of user text into them: no pydantic, no numpy.

`edge_sdk.types` re-exports all of them beside its value objects. They live apart so that what only needs a
name list (`edge-sdk --help`, which prints the valid backends and schemes) imports nothing heavy.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, TypeVar

from edge_sdk.errors import ConfigError, choices

if TYPE_CHECKING:
    import numpy as np  # imported where arrays are handled

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
        import numpy as np

        name = np.dtype(array_dtype).name
        try:
            return cls(name)
        except ValueError:
            raise ConfigError(f"unsupported tensor dtype {name!r}; valid: {choices(cls)}") from None

    @property
    def numpy(self) -> np.dtype:
        return _numpy_dtypes()[self.value]


_NUMPY_DTYPES: dict[str, np.dtype] = {}


def _numpy_dtypes() -> dict[str, np.dtype]:
    """numpy's dtype of each DType, made once (DType.numpy runs per Session.run check)."""
    if not _NUMPY_DTYPES:
        import numpy as np

        _NUMPY_DTYPES.update({d.value: np.dtype(d.value) for d in DType})
    return _NUMPY_DTYPES


def parse_shape(text: str) -> tuple[int, ...]:
    """'1x1x8x8' -> (1, 1, 8, 8)."""
    try:
        dims = tuple(int(part) for part in text.lower().replace(",", "x").split("x"))
    except ValueError:
        raise ConfigError(f"bad shape {text!r}; write it like 1x1x8x8") from None
    if not dims or any(d <= 0 for d in dims):
        raise ConfigError(f"bad shape {text!r}; every dimension must be a positive integer")
    return dims
