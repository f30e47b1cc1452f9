"""convert_llm(): a language model to a bundle of GGUF variants, through the one conversion loop
(converters.pipeline), each judged by the LogitsVerifier against the source at float32 (a GGUF of an architecture
our writer does not know: re-quantized by llama.cpp and judged against the file itself, converters.gguf.requantize);
bundle_as_is(): a GGUF as it is ('-q as-is'), through the same loop with an exporter and a verifier of its own
(converters.gguf.as_is)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from converters.gguf.as_is import AsIsExporter, AsIsSource, AsIsVerifier
from converters.gguf.evaluate import DEFAULT_EVAL_TOKENS
from converters.gguf.exporter import GgufExporter
from converters.gguf.logits_verifier import LogitsVerifier
from converters.gguf.requantize import LlamaQuantizeExporter, RequantSource
from converters.gguf.source_base import LlmSource
from converters.gguf.writer import TensorTypes, parse_gguf_quant
from converters.pipeline import ConvertOptions, convert
from converters.progress import ProgressCallback
from device_profiles import DeviceProfile
from edge_sdk.bundle import Bundle
from edge_sdk.errors import ConfigError
from edge_sdk.types import Backend, QuantScheme, Task


def convert_llm(
    source: LlmSource,
    quantizations: Sequence[QuantScheme | str],
    output: Path,
    name: str,
    profiles: Sequence[DeviceProfile] = (),
    *,
    version: str = "1.0.0",
    eval_text: str | None = None,
    eval_tokens: int = DEFAULT_EVAL_TOKENS,
    tolerance_scale: float = 1.0,
    allow_failed: bool = False,
    threads: int | None = None,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    tensor_types: TensorTypes = (),
    max_accuracy_drop: float | None = None,
) -> Bundle:
    """One GGUF variant per quantization ('q4_k_m', 'Q8_0', 'f16', ...), each gated on mean KL, top-1 agreement
    and perplexity. A variant outside its tolerance raises AccuracyGateError with the numbers, unless
    `allow_failed` keeps it as failed. `tensor_types` ((pattern, type), see writer.parse_tensor_types) give some
    tensors other types in every variant. `max_accuracy_drop` bounds 1 - top-1 agreement instead of the
    scheme's default; a variant that misses it keeps its most sensitive layers (token embedding, output layer,
    blocks) at f16 until it meets it, named in the recipe."""
    schemes = list(dict.fromkeys(parse_gguf_quant(q) for q in quantizations))  # refuses unknown types first
    if not schemes:
        raise ConfigError("nothing to convert: give at least one quantization")
    options = ConvertOptions(
        name=name, version=version, task=Task.TEXT_GENERATION, profiles=tuple(profiles), allow_failed=allow_failed,
        max_accuracy_drop=max_accuracy_drop,
    )  # fmt: skip
    verifier = LogitsVerifier(eval_text, eval_tokens, tolerance_scale, threads, max_accuracy_drop)
    pairs = [(Backend.GGUF, s) for s in schemes]
    # A GGUF of an architecture our writer does not know is re-quantized by llama.cpp, file to file.
    requant = isinstance(source, RequantSource)
    if requant and tensor_types:
        raise ConfigError("--tensor-type needs a model our writer converts; this GGUF is re-quantized by llama.cpp")
    exporters = {Backend.GGUF: LlamaQuantizeExporter() if requant else GgufExporter(tensor_types)}
    return convert(
        source, [], [], output, options, overwrite=overwrite, progress=progress, pairs=pairs, verifier=verifier,
        exporters=exporters,
    )  # fmt: skip


def bundle_as_is(
    path: Path,
    output: Path,
    name: str,
    profiles: Sequence[DeviceProfile] = (),
    *,
    version: str = "1.0.0",
    overwrite: bool = False,
    threads: int | None = None,
    chat_template: str | None = None,
    progress: ProgressCallback | None = None,
) -> Bundle:
    """The GGUF at `path` bundled unchanged ('-q as-is'), through the same loop: one variant, the file as its
    own reference (16 tokens of golden logits that `verify --run` re-checks), a fit report per profile. Its
    architecture is read from the header first; llama.cpp must load it. A `chat_template` goes beside the file
    (chat_template.jinja), which the llama.cpp session prefers."""
    source = AsIsSource(path)
    source.chat_template = chat_template
    options = ConvertOptions(name=name, version=version, task=Task.TEXT_GENERATION, profiles=tuple(profiles))
    return convert(
        source, [], [], output, options, overwrite=overwrite, progress=progress,
        pairs=[(Backend.GGUF, source.scheme)], verifier=AsIsVerifier(threads), exporters={Backend.GGUF: AsIsExporter()},
    )  # fmt: skip
