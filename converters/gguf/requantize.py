"""A GGUF of any architecture llama.cpp knows, re-quantized by llama.cpp's own quantizer (`llama-quantize
--allow-requantize`), and measured against the file it came from.

Our writer re-quantizes only the architectures whose tensors it knows (converters.gguf.model); any other GGUF goes
through here: its header is read first (milliseconds; an architecture llama.cpp does not know is refused at once,
by the list of its revision carried as data), llama.cpp quantizes it file to file, and the LogitsVerifier measures
each variant against the source file as it is (KL, top-1, perplexity). Re-quantizing an already quantized file
loses quality: the recipe carries the warning, and the measured KL says how much.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from converters.exporter import Exporter, ExportRequest, ExportResult
from converters.gguf.as_is import with_template_beside
from converters.gguf.exporter import _runtime
from converters.gguf.gguf_source import header_of, requantize_note
from converters.gguf.model import LlmModel
from converters.gguf.source_base import LlmSource
from converters.gguf.writer import GGUF_TYPES, gguf_type, llama_quantize, parse_gguf_quant
from device_profiles.gguf_header import FILE_TYPES
from edge_sdk.bundle import Recipe
from edge_sdk.bundle.files import sha256_file
from edge_sdk.errors import ConfigError, ModelSourceError, UnsupportedOperationError
from edge_sdk.types import Backend, QuantScheme

ARCHITECTURES_FILE = Path(__file__).parent / "data" / "llama_cpp_architectures.json"


@functools.cache
def llama_cpp_architectures() -> tuple[str, frozenset[str]]:
    """(llama.cpp revision, the architecture names it loads), as carried in the data file."""
    data: dict[str, Any] = json.loads(ARCHITECTURES_FILE.read_text(encoding="utf-8"))
    return str(data["llama_cpp_revision"]), frozenset(data["architectures"])


@dataclass
class RequantSource(LlmSource):
    """A GGUF file llama.cpp re-quantizes: its header says what it is; its weights are never read in Python."""

    path: Path
    kind: str = field(default="gguf", init=False)
    arch: str = field(default="", init=False)
    precision: str = field(default="", init=False)  # what the file is now: 'q8_0', 'fp16', 'llama.cpp file type 38'
    warning: str | None = field(default=None, init=False)  # set when the file is already quantized

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        header = header_of(self.path)  # bounded reads: a hostile or truncated header is refused here
        self.arch = str(header.get("general.architecture", "<missing>"))
        revision, known = llama_cpp_architectures()
        if self.arch not in known:
            raise ModelSourceError(
                f"{self.path.name!r} is a {self.arch!r} GGUF: the llama.cpp here ({revision}) knows no such "
                f"architecture, so it can neither quantize nor run it ({len(known)} known, e.g. 'llama', 'qwen3', "
                "'gemma3', 'gpt2', 'phi3')"
            )
        file_type = header.get("general.file_type", -1)
        known_type = FILE_TYPES.get(file_type) if isinstance(file_type, int) else None
        self.precision = known_type or f"llama.cpp file type {file_type}"
        self.warning = requantize_note(self.path)

    def load(self) -> LlmModel:
        raise UnsupportedOperationError(
            f"{self.path.name} ({self.arch}) is re-quantized by llama.cpp; its weights are not loaded in Python"
        )

    def requantize_warning(self) -> str | None:
        return self.warning

    def reference_file(self, workdir: Path) -> tuple[Path, str]:
        return self.path, f"as it is ({self.precision})"

    def digest(self) -> str:
        return "sha256:" + sha256_file(self.path)

    def describe(self) -> str:
        return f"{self.path.name} ({self.arch})"


def llama_ftype(scheme: QuantScheme) -> str:
    """The llama_cpp.LLAMA_FTYPE_* name of a GGUF type ('LLAMA_FTYPE_MOSTLY_Q8_0', 'LLAMA_FTYPE_ALL_F32')."""
    spec = gguf_type(scheme)
    return spec.llama_ftype or f"LLAMA_FTYPE_{spec.file_type}"


class LlamaQuantizeExporter(Exporter):
    """File to file with llama.cpp's quantizer, re-quantizing tensors that are already quantized."""

    backend = Backend.GGUF
    quantizations = tuple(GGUF_TYPES)

    def check(self, quantization: QuantScheme) -> None:
        parse_gguf_quant(quantization)

    def export(self, request: ExportRequest) -> ExportResult:
        source = request.source
        if not isinstance(source, RequantSource):
            raise ConfigError(f"llama.cpp re-quantizes a .gguf file here; got {source.kind}: {source.describe()}")
        scheme, dest = request.quantization, request.workdir / "model.gguf"
        llama_quantize(source.path, dest, llama_ftype(scheme), allow_requantize=True)
        options = {"quantizer": "llama.cpp", "arch": source.arch, "requantized_from": source.precision}
        if source.warning is not None:  # already quantized: re-quantizing loses quality, measured below
            options["warning"] = source.warning
        recipe = Recipe(quantization=scheme, precision=gguf_type(scheme).precision, options=options)
        files = with_template_beside({"model.gguf": dest}, source.chat_template, request.workdir)
        return ExportResult(files=files, inputs=(), outputs=(), recipe=recipe, runtime=_runtime())
