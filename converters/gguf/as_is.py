"""Any GGUF llama.cpp loads, bundled as it is: no conversion, a golden set and a fit report from the file itself.

The header is read first (milliseconds, hostile counts refused); then llama.cpp itself must load the file, which
is what "any architecture" means here: whatever the device's llama.cpp runs. The pieces plug into the one
conversion loop (converters.pipeline, through converters.llm_convert.bundle_as_is): a source that is the file,
an exporter that hands the file over unchanged, and a verifier that records the file's own golden logits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from converters.exporter import Exporter, ExportRequest, ExportResult
from converters.gguf.evaluate import DEFAULT_EVAL_TOKENS, evaluation_text, logits_of, tokenize
from converters.gguf.exporter import _runtime
from converters.gguf.gguf_source import header_of
from converters.gguf.model import LlmModel
from converters.gguf.source_base import LlmSource
from converters.sources import ModelSource
from converters.verifier import Exported, Golden, Reference, Verdict, Verifier
from device_profiles.gguf_header import FILE_TYPES
from edge_sdk.bundle import AccuracyReport, Recipe
from edge_sdk.bundle.files import sha256_file
from edge_sdk.errors import ConfigError, ModelSourceError, RuntimeFailure, UnsupportedOperationError
from edge_sdk.types import Backend, QuantScheme, Task
from runtimes.llama_cpp_adapter import CHAT_TEMPLATE_FILE

AS_IS = "as-is"
GOLDEN_TOKENS = 16


def wants_as_is(quantize: object) -> bool:
    """Whether a `quantize` argument asks for the file as it is ('as-is', alone)."""
    items = [quantize] if isinstance(quantize, str) else list(quantize) if isinstance(quantize, list | tuple) else []
    names = [str(q).strip().lower() for item in items for q in str(item).split(",") if str(q).strip()]
    if AS_IS in names and len(names) > 1:
        raise ConfigError(f"'{AS_IS}' keeps the file as it is; it cannot be combined with {names}")
    return names == [AS_IS]


@dataclass
class AsIsSource(LlmSource):
    """A GGUF file taken as it is: its header says what it is; its weights are never read here."""

    path: Path
    kind: str = field(default="gguf", init=False)
    task: Task = field(default=Task.TEXT_GENERATION, init=False)
    arch: str = field(default="", init=False)  # the rest read from the header
    file_type: int = field(default=-1, init=False)
    scheme: QuantScheme = field(default=QuantScheme.NONE, init=False)
    precision: str = field(default="", init=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        if self.path.suffix != ".gguf" and not self.path.is_file():
            raise ModelSourceError(f"'{AS_IS}' bundles a .gguf file as it is; {str(self.path)!r} is not one")
        header = header_of(self.path)  # refuses a hostile or truncated header before llama.cpp parses anything
        self.arch = str(header.get("general.architecture", "<missing>"))
        file_type = header.get("general.file_type", -1)
        self.file_type = file_type if isinstance(file_type, int) and not isinstance(file_type, bool) else -1
        known = FILE_TYPES.get(self.file_type)
        self.scheme = QuantScheme(known) if known is not None else QuantScheme.NONE
        self.precision = known or f"llama.cpp file type {self.file_type}"

    def load(self) -> LlmModel:
        raise UnsupportedOperationError(f"'{AS_IS}' keeps {self.path.name} as it is; its weights are not converted")

    def digest(self) -> str:
        return "sha256:" + sha256_file(self.path)

    def describe(self) -> str:
        return f"{self.path.name} ({self.arch})"


def with_template_beside(files: dict[str, Path], chat_template: str | None, workdir: Path) -> dict[str, Path]:
    """`files` with the user's chat template beside the GGUF (chat_template.jinja, which the session prefers):
    for a file whose metadata we do not rewrite."""
    if chat_template is None:
        return files
    template_file = workdir / CHAT_TEMPLATE_FILE
    template_file.write_text(chat_template, encoding="utf-8")
    return {**files, CHAT_TEMPLATE_FILE: template_file}


class AsIsExporter(Exporter):
    """Hands the source's file over unchanged (with a chat template beside it, when one was given)."""

    backend = Backend.GGUF
    quantizations = tuple(QuantScheme)

    def label(self, quantization: QuantScheme) -> str:
        # NONE is what AsIsSource says of a file type llama.cpp has and we do not name: not "unquantized"
        return AS_IS if quantization is QuantScheme.NONE else quantization.value

    def export(self, request: ExportRequest) -> ExportResult:
        source = request.source
        if not isinstance(source, AsIsSource):
            raise ConfigError(f"'{AS_IS}' bundles a .gguf file; got a {source.kind} source: {source.describe()}")
        files = with_template_beside({"model.gguf": source.path}, source.chat_template, request.workdir)
        recipe = Recipe(
            quantization=source.scheme, precision=source.precision, options={"quantizer": AS_IS, "arch": source.arch}
        )
        return ExportResult(files=files, inputs=(), outputs=(), recipe=recipe, runtime=_runtime())


@dataclass(frozen=True)
class AsIsVerifier(Verifier):
    """Nothing to compare with: the file is its own reference. Its golden logits (16 tokens) are recorded so that
    `verify --run` and `install` re-check it on the device; llama.cpp must load it, or it is refused."""

    threads: int | None = None

    def describe(self, source: ModelSource) -> str:
        return f"loading {source.describe()} in llama.cpp"

    def prepare(self, source: ModelSource, workdir: Path) -> Reference:
        if not isinstance(source, AsIsSource):
            raise ConfigError(f"'{AS_IS}' bundles a .gguf file; got a {source.kind} source: {source.describe()}")
        try:
            tokens = tokenize(source.path, evaluation_text(), max_tokens=DEFAULT_EVAL_TOKENS)
        except RuntimeFailure as exc:
            raise ModelSourceError(
                f"llama.cpp cannot load this {source.arch!r} GGUF, so it cannot be bundled: {exc}"
            ) from None
        golden = tokens[:GOLDEN_TOKENS]
        golden_logits = logits_of(source.path, golden, threads=self.threads).logits
        return AsIsReference(Golden(inputs={"tokens": golden}, outputs={"logits": golden_logits}))

    def refusal(self, variant_id: str, accuracy: AccuracyReport) -> str:  # never asked: no accuracy is measured
        return f"variant {variant_id} is bundled as it is; nothing was measured against it"


@dataclass(frozen=True, eq=False)
class AsIsReference(Reference):
    def measure(self, variant: Exported) -> Verdict:
        """The file is the reference: no accuracy report, and its golden outputs are the reference's own."""
        return Verdict(None, dict(self.golden.outputs))
