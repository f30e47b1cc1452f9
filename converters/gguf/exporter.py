"""GgufExporter: the Exporter for Backend.GGUF, writing one .gguf per quantization."""

from __future__ import annotations

import importlib.metadata

from converters.exporter import Exporter, ExportRequest, ExportResult
from converters.gguf.source_base import LlmSource
from converters.gguf.writer import GGUF_TYPES, gguf_type, parse_gguf_quant, write_gguf
from edge_sdk.bundle import Recipe, RuntimeRequirement
from edge_sdk.errors import ConfigError
from edge_sdk.types import Backend, QuantScheme


def _runtime() -> RuntimeRequirement:
    try:
        version = importlib.metadata.version("llama-cpp-python")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return RuntimeRequirement(package="llama-cpp-python", version=version, extra="gguf")


class GgufExporter(Exporter):
    backend = Backend.GGUF
    quantizations = tuple(GGUF_TYPES)

    def check(self, quantization: QuantScheme) -> None:
        parse_gguf_quant(quantization)  # the gguf backend's one refusal, whether the type came as text or enum

    def export(self, request: ExportRequest) -> ExportResult:
        self.check(request.quantization)
        if not isinstance(request.source, LlmSource):
            raise ConfigError(
                f"the gguf backend converts language models (a .gguf or a Hugging Face LLaMA directory); "
                f"got a {request.source.kind} source: {request.source.describe()}"
            )
        scheme, path = request.quantization, request.workdir / "model.gguf"
        write_gguf(request.source.load(), path, scheme)  # sources load once, however many variants
        spec = gguf_type(scheme)
        engine = "llama.cpp" if spec.llama_ftype else "gguf-py"
        options = {"quantizer": engine}
        warning = request.source.requantize_warning()  # a GGUF that was already quantized: say so in the recipe
        if warning is not None:
            options["warning"] = warning
        recipe = Recipe(quantization=scheme, precision=spec.precision, options=options)
        return ExportResult(files={"model.gguf": path}, inputs=(), outputs=(), recipe=recipe, runtime=_runtime())
