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
from edge_sdk.errors import ConfigError, choices
from edge_sdk.types import Backend, QuantScheme, Task


def llm_pairs(
    backends: Sequence[Backend], quantizations: Sequence[QuantScheme | str]
) -> list[tuple[Backend, QuantScheme]]:
    """Each quantization on each backend that applies it ('-b gguf,executorch -q q4_k_m,8da4w'): a quantization
    no chosen backend applies, or a backend left with none, is refused, naming what each one takes."""
    from converters.pipeline import get_exporter
    from edge_sdk.registry import SourceKind

    exporters = {b: get_exporter(b, SourceKind.LANGUAGE_MODEL) for b in dict.fromkeys(backends)}
    takes = {b: tuple(dict.fromkeys(e.quantizations)) for b, e in exporters.items()}
    offered = ", ".join(f"{b.value}: {choices(q.value for q in qs)}" for b, qs in takes.items())
    pairs: list[tuple[Backend, QuantScheme]] = []
    for text in dict.fromkeys(quantizations):
        scheme = _scheme(text)
        found = [(b, scheme) for b, qs in takes.items() if scheme in qs]
        if not found:
            raise ConfigError(f"no chosen backend applies quantization {str(text)!r}; they take {offered}")
        pairs += found
    idle = [b.value for b in takes if all(pb is not b for pb, _ in pairs)]
    if idle:
        raise ConfigError(f"{', '.join(idle)} would get no variant from -q {list(quantizations)}; they take {offered}")
    return pairs


def _scheme(text: QuantScheme | str) -> QuantScheme:
    if isinstance(text, QuantScheme):
        return text
    lowered = str(text).strip().lower()
    for candidate in (lowered, lowered.replace("_", "-")):
        try:
            return QuantScheme(candidate)
        except ValueError:
            continue
    return parse_gguf_quant(text)  # llama.cpp's spellings ('Q8_0', 'f16'), or its refusal


def convert_llm(
    source: LlmSource,
    quantizations: Sequence[QuantScheme | str],
    output: Path,
    name: str,
    profiles: Sequence[DeviceProfile] = (),
    *,
    backends: Sequence[Backend] = (Backend.GGUF,),
    context: int | None = None,
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
    calibration_text: str | None = None,
) -> Bundle:
    """One variant per backend × quantization it applies ('q4_k_m', 'Q8_0', 'f16' for gguf; 'f32', '8da4w' for
    executorch; 'f32', 'int4' for onnx), each gated on mean KL, top-1 agreement and perplexity against the same
    reference. A variant outside its tolerance raises AccuracyGateError with the numbers, unless `allow_failed`
    keeps it as failed. `context`: the KV cache ExecuTorch and ONNX GenAI variants hold (tokens). `tensor_types`
    ((pattern, type), see writer.parse_tensor_types) give some tensors of every GGUF variant other types.
    `max_accuracy_drop` bounds 1 - top-1 agreement instead of the scheme's default; a GGUF variant that misses it
    keeps its most sensitive layers (token embedding, output layer, blocks) at f16 until it meets it, named in
    the recipe. `calibration_text` gives GGUF variants an importance matrix (llama-imatrix's mean x² of each
    weight's input columns, computed on it by llama.cpp), weighting the quantization of every weight whose type
    uses one (all but q8_0 and float): recorded in the recipe with its token count."""
    if not quantizations:
        raise ConfigError("nothing to convert: give at least one quantization")
    if calibration_text is not None and Backend.GGUF not in backends:
        raise ConfigError(
            "calibration text makes the importance matrix of GGUF variants; add -b gguf (the executorch and onnx "
            "language-model schemes take none)"
        )
    if list(backends) == [Backend.GGUF]:
        pairs = [(Backend.GGUF, s) for s in dict.fromkeys(parse_gguf_quant(q) for q in quantizations)]
    else:
        pairs = llm_pairs(backends, quantizations)  # refuses unknown types first
    options = ConvertOptions(
        name=name, version=version, task=Task.TEXT_GENERATION, profiles=tuple(profiles), allow_failed=allow_failed,
        max_accuracy_drop=max_accuracy_drop, context=context,
    )  # fmt: skip
    verifier = LogitsVerifier(eval_text, eval_tokens, tolerance_scale, threads, max_accuracy_drop)
    # A GGUF of an architecture our writer does not know is re-quantized by llama.cpp, file to file.
    requant = isinstance(source, RequantSource)
    if requant and (tensor_types or calibration_text is not None):
        what = "--tensor-type" if tensor_types else "an importance matrix (--calibration)"
        raise ConfigError(f"{what} needs a model our writer converts; this GGUF is re-quantized by llama.cpp")
    gguf_exporter = GgufExporter(tensor_types, calibration_text, threads)
    exporters = {Backend.GGUF: LlamaQuantizeExporter() if requant else gguf_exporter}
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
