"""The interface every backend's exporter implements, and what an export hands back."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from converters.sources import ModelSource
from edge_sdk.bundle import Recipe, RuntimeRequirement
from edge_sdk.errors import ConfigError, choices
from edge_sdk.types import Backend, CalibrationMethod, QuantScheme, TensorSpec


@dataclass(frozen=True)
class ExportRequest:
    source: ModelSource
    quantization: QuantScheme
    workdir: Path
    calibration: dict[str, np.ndarray] | None = None  # arrays with a leading sample axis
    min_delegated: float | None = None  # least share of compute an accelerator delegate must take (0..1)
    calibration_method: CalibrationMethod | None = None  # None: the recipe's default for the model's kind
    keep_float: tuple[str, ...] = ()  # layers (as `layers()` names them) to leave unquantized
    # Where the exporter keeps what every quantization of this source starts from (e.g. the fp32 .onnx), so
    # one conversion exports the source once per backend; None: the workdir (one export per variant).
    shared: Path | None = None

    @property
    def base_dir(self) -> Path:
        return self.shared if self.shared is not None else self.workdir

    context: int | None = None  # a language model's KV cache (tokens); None: the exporter's default


@dataclass
class ExportResult:
    files: dict[str, Path]  # name inside the variant -> file written in the workdir
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    recipe: Recipe
    runtime: RuntimeRequirement
    notes: list[str] = field(default_factory=list)


class Exporter(ABC):
    backend: ClassVar[Backend]
    quantizations: ClassVar[tuple[QuantScheme, ...]]

    def check(self, quantization: QuantScheme) -> None:
        if quantization not in self.quantizations:
            raise ConfigError(
                f"the {self.backend.value} backend cannot apply quantization {quantization.value!r}; "
                f"it supports: {choices(q.value for q in self.quantizations)}"
            )

    def check_source(self, source: ModelSource, context: int | None) -> None:  # noqa: B027 - most take any
        """Refuse, before any export work, a source (architecture, context) this exporter cannot take."""

    @abstractmethod
    def export(self, request: ExportRequest) -> ExportResult: ...

    def label(self, quantization: QuantScheme) -> str:
        """What the variant id calls this quantization ('gguf-<label>'): the scheme's own name unless the
        exporter knows better (a GGUF kept as it is, whose file type has no name here, is 'as-is')."""
        return quantization.value

    def layers(self, request: ExportRequest) -> tuple[str, ...]:
        """The layers `keep_float` may name, most compute first, once `request` has been exported (its workdir
        holds the export). Empty: this exporter cannot mix precisions, so accuracy-aware search does not apply."""
        return ()
