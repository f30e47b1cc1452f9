"""GgufExporter: the Exporter for Backend.GGUF, writing one .gguf per quantization."""

from __future__ import annotations

import importlib.metadata
import shutil
from pathlib import Path

from converters.exporter import Exporter, ExportRequest, ExportResult
from converters.gguf.model import LlmModel
from converters.gguf.source_base import LlmSource
from converters.gguf.writer import GGUF_TYPES, gguf_type, write_gguf
from edge_sdk.bundle import Recipe, RuntimeRequirement
from edge_sdk.errors import ConfigError
from edge_sdk.types import Backend, QuantScheme


def _runtime() -> RuntimeRequirement:
    try:
        version = importlib.metadata.version("llama-cpp-python")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return RuntimeRequirement(package="llama-cpp-python", version=version, extra="gguf")


def export_variant(model: LlmModel, scheme: QuantScheme, workdir: Path, reuse_f32: Path | None = None) -> ExportResult:
    """Write `model` as one GGUF in `scheme` under `workdir` (`reuse_f32`: an f32 GGUF of it already written)."""
    spec = gguf_type(scheme)
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "model.gguf"
    if reuse_f32 is not None and spec.qtype == "F32":
        shutil.copyfile(reuse_f32, path)
    else:
        write_gguf(model, path, scheme)
    engine = "llama.cpp" if spec.llama_ftype else "gguf-py"
    recipe = Recipe(quantization=scheme, precision=spec.precision, options={"quantizer": engine})
    return ExportResult(files={"model.gguf": path}, inputs=(), outputs=(), recipe=recipe, runtime=_runtime())


class GgufExporter(Exporter):
    backend = Backend.GGUF
    quantizations = tuple(GGUF_TYPES)

    def export(self, request: ExportRequest) -> ExportResult:
        self.check(request.quantization)
        if not isinstance(request.source, LlmSource):
            raise ConfigError(
                f"the gguf backend converts language models (a .gguf or a Hugging Face LLaMA directory); "
                f"got a {request.source.kind} source: {request.source.describe()}"
            )
        return export_variant(request.source.load(), request.quantization, request.workdir)
