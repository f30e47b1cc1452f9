"""Existing .tflite models: a source that reads one, and an exporter that wraps it unchanged into a bundle.

No conversion happens here: the file was made elsewhere (TensorFlow, LiteRT Torch, a vendor toolchain) and
is bundled as it is, verified by LiteRT against its own outputs and carried with a golden set. Inputs and
outputs stored as int8 / uint8 appear as float32 (see runtimes.tflite_adapter).
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from converters.exporter import Exporter, ExportRequest, ExportResult
from converters.sources import ModelSource, _synthesize
from edge_sdk import registry
from edge_sdk.bundle import Recipe, RuntimeRequirement
from edge_sdk.bundle.files import sha256_file
from edge_sdk.errors import ModelSourceError, RuntimeFailure
from edge_sdk.types import Backend, QuantScheme, TensorSpec

if TYPE_CHECKING:
    from runtimes.tflite_adapter import LiteRtModel

_IDENTIFIER = b"TFL3"  # the flatbuffer file identifier every .tflite model carries at bytes 4..8


def _litert_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ai-edge-litert")
    except PackageNotFoundError:  # pragma: no cover - the import above would have failed first
        return "unknown"


@dataclass
class TfliteFileSource(ModelSource):
    """An existing `.tflite` file. `reference()` runs the original file with LiteRT."""

    path: Path
    example_inputs: dict[str, np.ndarray] = field(default_factory=dict)
    kind: str = field(default="tflite", init=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        if not self.path.is_file():
            raise ModelSourceError(f"TFLite file {str(self.path)!r} does not exist")
        with self.path.open("rb") as f:
            head = f.read(8)
        if len(head) < 8 or head[4:8] != _IDENTIFIER:
            raise ModelSourceError(
                f"{str(self.path)!r} is not a TFLite model: it lacks the {_IDENTIFIER.decode()!r} flatbuffer "
                f"identifier (found {head[4:8]!r})"
            )
        registry.load(Backend.TFLITE, registry.Role.RUNTIME)  # BackendUnavailableError naming the extra
        from runtimes.tflite_adapter import LiteRtModel

        try:
            self._model: LiteRtModel = LiteRtModel(self.path)
        except RuntimeFailure as exc:
            raise ModelSourceError(f"{str(self.path)!r} is not a model LiteRT can load: {exc}") from None
        self.inputs = tuple(p.spec for p in self._model.inputs)
        self.outputs = tuple(p.spec for p in self._model.outputs)
        if not self.example_inputs:
            self.example_inputs = _synthesize(self.inputs)

    def digest(self) -> str:
        return "sha256:" + sha256_file(self.path)

    def input_specs(self) -> tuple[TensorSpec, ...]:
        return self.inputs

    def quantization(self) -> dict[str, str]:
        return self._model.quantization()

    def reference(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._model.run(dict(inputs))

    def describe(self) -> str:
        return self.path.name


class TfliteWrapExporter(Exporter):
    """Wraps an existing .tflite file as a variant; it cannot quantize (the file already is what it is)."""

    backend = Backend.TFLITE
    quantizations = (QuantScheme.NONE,)

    def export(self, request: ExportRequest) -> ExportResult:
        self.check(request.quantization)
        source = request.source
        if not isinstance(source, TfliteFileSource):
            raise ModelSourceError(
                f"the tflite backend only wraps an existing .tflite file; it cannot convert a {source.kind!r} "
                "source (use the onnx or executorch backend for that)"
            )
        out = request.workdir / "model.tflite"
        shutil.copyfile(source.path, out)
        quant = source.quantization()
        options = {"wrapped": source.path.name, **{f"quantization.{k}": v for k, v in quant.items()}}
        return ExportResult(
            files={"model.tflite": out},
            inputs=source.inputs,
            outputs=source.outputs,
            recipe=Recipe(
                quantization=request.quantization,
                precision="int8 (as stored in the file)" if quant else "as stored in the file",
                options=options,
            ),
            runtime=RuntimeRequirement(package="ai-edge-litert", version=_litert_version(), extra="tflite"),
            notes=[f"wrapped {source.path.name} unchanged (no conversion)"],
        )
