"""convert_llm(): an LLM source to a bundle of GGUF variants, each measured on text against the f32 reference."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from converters.gguf.evaluate import DEFAULT_EVAL_TOKENS, compare_logits, evaluation_text, logits_of, tokenize
from converters.gguf.exporter import export_variant
from converters.gguf.quality import accuracy_report, summary, tolerance_for
from converters.gguf.source_base import LlmSource
from converters.gguf.writer import parse_gguf_quant, write_gguf
from device_profiles import DeviceProfile
from device_profiles.estimate import ModelFacts
from device_profiles.fit import check_fit
from edge_sdk import __version__
from edge_sdk.bundle import Bundle, BundleWriter, SourceInfo
from edge_sdk.errors import AccuracyGateError, ConfigError
from edge_sdk.types import Backend, QuantScheme, Task

ProgressCallback = Callable[[str, str | None, int, int], None]  # step, variant, done, total


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
) -> Bundle:
    """One GGUF variant per quantization, each gated on mean KL, top-1 agreement and perplexity.

    The reference is the source at float32 run by llama.cpp (a GGUF source is dequantized first). A variant
    outside its tolerance raises AccuracyGateError with the numbers, unless `allow_failed` keeps it as failed.
    """
    report = progress or (lambda _s, _v, _d, _t: None)
    schemes = list(dict.fromkeys(parse_gguf_quant(q) for q in quantizations))  # refuses unknown types first
    if not schemes:
        raise ConfigError("nothing to convert: give at least one quantization")
    model = source.load()
    writer = BundleWriter(
        name=name,
        version=version,
        task=Task.TEXT_GENERATION,
        created_by=f"edge-sdk {__version__}",
        source=SourceInfo(kind=source.kind, digest=source.digest(), description=source.describe()),
    )
    try:
        with tempfile.TemporaryDirectory(prefix="edge-gguf-") as tmp:
            work = Path(tmp)
            report("reference", None, 0, len(schemes))
            reference_file = write_gguf(model, work / "reference-f32.gguf", QuantScheme.F32)
            tokens = tokenize(reference_file, eval_text or evaluation_text(), max_tokens=eval_tokens)
            reference = logits_of(reference_file, tokens, threads=threads)
            ref_name = f"{source.describe()} at float32 in llama.cpp ({len(tokens)} tokens of stdlib docstrings)"
            for i, scheme in enumerate(schemes):
                variant_id = f"gguf-{scheme.value.replace('_', '-')}"
                report("export", variant_id, i, len(schemes))
                result = export_variant(model, scheme, work / variant_id, reuse_f32=reference_file)
                report("verify", variant_id, i, len(schemes))
                gguf_path = next(iter(result.files.values()))
                quality = compare_logits(reference, logits_of(gguf_path, tokens, threads=threads))
                accuracy = accuracy_report(quality, tolerance_for(scheme, tolerance_scale), ref_name)
                if not accuracy.passed and not allow_failed:
                    raise AccuracyGateError(
                        f"variant {variant_id} is outside its tolerance against {ref_name}: {summary(accuracy)}. "
                        "Use a milder quantization or loosen the gate (tolerance_scale)."
                    )
                facts = ModelFacts.of_files(Backend.GGUF, scheme, [gguf_path])
                fit = {p.id: check_fit(p, facts) for p in profiles}
                writer.add_variant(
                    variant_id=variant_id,
                    backend=Backend.GGUF,
                    files=result.files,
                    inputs=result.inputs,
                    outputs=result.outputs,
                    recipe=result.recipe,
                    runtime=result.runtime,
                    accuracy=accuracy,
                    fit=fit,
                )
                gguf_path.unlink()  # the bundle writer has its copy; keep the workdir small
        report("write", None, len(schemes), len(schemes))
        return writer.write(output, overwrite=overwrite)
    finally:
        writer.discard()
