"""GgufExporter: the Exporter for Backend.GGUF, writing one .gguf per quantization, optionally with some tensors
in other types (the output layer kept at q8_0 in a q4_0 file), and naming its layers for accuracy-aware search."""

from __future__ import annotations

import importlib.metadata
import re
import tempfile
from pathlib import Path

import numpy as np

from converters.exporter import Exporter, ExportRequest, ExportResult
from converters.gguf.imatrix import NO_IMATRIX_TYPES, ImportanceMatrix, compute_imatrix
from converters.gguf.source_base import LlmSource
from converters.gguf.writer import (
    GGUF_TYPES,
    PYTHON_TENSOR_TYPES,
    TensorTypes,
    describe_tensor_types,
    gguf_type,
    parse_gguf_quant,
    tensor_types_of,
    write_gguf,
)
from edge_sdk.bundle import Recipe, RuntimeRequirement
from edge_sdk.errors import ConfigError
from edge_sdk.types import Backend, QuantScheme

FLOAT_SCHEMES = (QuantScheme.NONE, QuantScheme.F32, QuantScheme.FP16, QuantScheme.BF16)
KEPT_FLOAT_TYPE = "f16"  # a layer the accuracy-aware search keeps out of the quantization


def _runtime() -> RuntimeRequirement:
    try:
        version = importlib.metadata.version("llama-cpp-python")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return RuntimeRequirement(package="llama-cpp-python", version=version, extra="gguf")


def _layer_pattern(layer: str) -> str:
    """'blk.3' -> every tensor of block 3; 'output', 'token_embd' -> that tensor."""
    block = re.fullmatch(r"blk\.(\d+)", layer)
    return rf"blk\.{block.group(1)}\..*" if block else re.escape(layer)


class GgufExporter(Exporter):
    backend = Backend.GGUF
    quantizations = tuple(GGUF_TYPES)

    def __init__(
        self, tensor_types: TensorTypes = (), calibration_text: str | None = None, threads: int | None = None
    ) -> None:
        self.tensor_types = tensor_types  # (pattern, type) given by the user, applied to every variant
        self.calibration_text = calibration_text  # given: quantized weights are weighted by an importance matrix
        self.threads = threads
        self._imatrices: dict[int, ImportanceMatrix] = {}  # per source object: computed once per conversion

    def check(self, quantization: QuantScheme) -> None:
        parse_gguf_quant(quantization)  # the gguf backend's one refusal, whether the type came as text or enum

    def export(self, request: ExportRequest) -> ExportResult:
        self.check(request.quantization)
        source = self._source(request)
        scheme, path = request.quantization, request.workdir / "model.gguf"
        kept = tuple((_layer_pattern(layer), KEPT_FLOAT_TYPE) for layer in request.keep_float)
        model = source.load()  # sources load once, however many variants
        weighted = self.calibration_text is not None and scheme not in FLOAT_SCHEMES
        imatrix = self._imatrix(source, request.base_dir) if weighted else None
        write_gguf(model, path, scheme, self.tensor_types + kept, imatrix.values if imatrix else None)
        spec = gguf_type(scheme)
        mixed = bool(self.tensor_types or kept)
        by_llama = (
            spec.llama_ftype
            or imatrix is not None
            or any(kind not in PYTHON_TENSOR_TYPES for _, kind in self.tensor_types)
        )
        engine = "llama.cpp" if by_llama else "gguf-py"
        options = {"quantizer": engine}
        warning = source.requantize_warning()  # a GGUF that was already quantized: say so in the recipe
        if warning is not None:
            options["warning"] = warning
        if imatrix is not None:  # which weights it weighted: those it covers, in a type whose quantizer uses one
            used = [n for n, t in tensor_types_of(path).items() if n in imatrix.values and t not in NO_IMATRIX_TYPES]
            options["imatrix"] = (
                f"{imatrix.tokens} calibration tokens ({imatrix.chunks} chunk(s)); {len(used)} weight(s) quantized "
                "with it"
                if used
                else "not used: no weight of this file has a type that uses one"
            )
            options["imatrix_tokens"] = str(imatrix.tokens)
        if mixed:  # what the file holds, read back: which tensors have which type
            options |= describe_tensor_types(tensor_types_of(path))
            if self.tensor_types:
                options["tensor_type_overrides"] = ",".join(f"{p}={t}" for p, t in self.tensor_types)
            if kept:
                options["float_layers"] = ",".join(request.keep_float)
        recipe = Recipe(quantization=scheme, precision=spec.precision, options=options)
        return ExportResult(files={"model.gguf": path}, inputs=(), outputs=(), recipe=recipe, runtime=_runtime())

    def _imatrix(self, source: LlmSource, workdir: Path) -> ImportanceMatrix:
        """The importance matrix of `source` over the calibration text: its float32 file run by llama.cpp."""
        key = id(source)
        if key not in self._imatrices:
            assert self.calibration_text is not None
            workdir.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(prefix="edge-imatrix-", dir=workdir) as tmp:
                f32 = write_gguf(source.load(), Path(tmp) / "f32.gguf", QuantScheme.F32)
                self._imatrices[key] = compute_imatrix(f32, self.calibration_text, threads=self.threads)
        return self._imatrices[key]

    def layers(self, request: ExportRequest) -> tuple[str, ...]:
        """The token embedding, the output layer and each block, largest first: what the accuracy-aware search
        may keep at f16 in a quantized file."""
        if request.quantization in FLOAT_SCHEMES:
            return ()
        sizes: dict[str, int] = {}
        for name, array in self._source(request).load().tensors.items():
            if np.asarray(array).ndim < 2:
                continue
            block = re.match(r"blk\.\d+", name)
            layer = block.group(0) if block else name.removesuffix(".weight")
            sizes[layer] = sizes.get(layer, 0) + int(np.asarray(array).size)
        return tuple(sorted(sizes, key=lambda x: -sizes[x]))

    @staticmethod
    def _source(request: ExportRequest) -> LlmSource:
        if not isinstance(request.source, LlmSource):
            raise ConfigError(
                f"the gguf backend converts language models (a .gguf or a Hugging Face LLaMA directory); "
                f"got a {request.source.kind} source: {request.source.describe()}"
            )
        return request.source
