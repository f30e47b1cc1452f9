"""LogitsVerifier: a language model's variants judged on text against the source at float32 in llama.cpp:
mean KL divergence, top-1 agreement and perplexity (converters.gguf.evaluate / quality)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from converters.gguf.evaluate import DEFAULT_EVAL_TOKENS, Logits, compare_logits, evaluation_text, logits_of, tokenize
from converters.gguf.quality import accuracy_report, summary, tolerance_for
from converters.gguf.source_base import LlmSource
from converters.sources import ModelSource
from converters.verifier import Exported, Golden, Reference, Verdict, Verifier
from edge_sdk.bundle import AccuracyReport
from edge_sdk.errors import ConfigError

GOLDEN_TOKENS = 16  # logits of 16 positions: ~3 MB a variant for a 49k vocabulary


@dataclass(frozen=True)
class LogitsVerifier(Verifier):
    eval_text: str | None = None  # default: docstrings of standard-library modules
    eval_tokens: int = DEFAULT_EVAL_TOKENS
    tolerance_scale: float = 1.0  # > 1 loosens every quantization's default tolerance, < 1 tightens it
    threads: int | None = None
    max_top1_drop: float | None = None  # the user's bound on 1 - top-1 agreement, instead of the scheme's

    def prepare(self, source: ModelSource, workdir: Path) -> Reference:
        """The reference is the source at float32 run by llama.cpp (a GGUF source is dequantized first), or the
        source file itself when llama.cpp re-quantizes it (converters.gguf.requantize)."""
        if not isinstance(source, LlmSource):
            raise ConfigError(f"only a language model is judged on its logits over text; {source.describe()} is not")
        reference_file, as_what = source.reference_file(workdir)
        tokens = tokenize(reference_file, self.eval_text or evaluation_text(), max_tokens=self.eval_tokens)
        logits = logits_of(reference_file, tokens, threads=self.threads)
        golden = tokens[:GOLDEN_TOKENS]  # re-checked on the device by `verify --run` and `install`
        golden_logits = logits_of(reference_file, golden, threads=self.threads).logits
        return LogitsReference(
            golden=Golden(inputs={"tokens": golden}, outputs={"logits": golden_logits}),
            verifier=self,
            logits=logits,
            name=f"{source.describe()} {as_what} in llama.cpp ({len(tokens)} tokens of stdlib docstrings)",
        )

    def refusal(self, variant_id: str, accuracy: AccuracyReport) -> str:
        return (
            f"variant {variant_id} is outside its tolerance against {accuracy.reference}: {summary(accuracy)}. "
            "Use a milder quantization or loosen the gate (tolerance_scale)."
        )


@dataclass(frozen=True, eq=False)
class LogitsReference(Reference):
    verifier: LogitsVerifier
    logits: Logits  # the reference's, at every position of the evaluation tokens
    name: str

    def measure(self, variant: Exported) -> Verdict:
        threads = self.verifier.threads
        tokens, golden = self.logits.tokens, self.golden.inputs["tokens"]
        gguf_path = variant.result.files.get("model.gguf")
        if gguf_path is not None:  # a fresh llama.cpp context per evaluation, as the reference was measured
            variant_logits = logits_of(gguf_path, tokens, threads=threads)
            golden_logits = logits_of(gguf_path, golden, threads=threads).logits
        else:  # any other engine: its own runtime, as a device runs the variant
            variant_logits, golden_logits = _scored_by_runtime(variant, tokens, golden, threads)
        quality = compare_logits(self.logits, variant_logits)
        scale = self.verifier.tolerance_scale
        tolerance = tolerance_for(variant.quantization, scale, same_engine=gguf_path is not None)
        if self.verifier.max_top1_drop is not None:
            tolerance = replace(tolerance, max_top1_drop=self.verifier.max_top1_drop)
        accuracy = accuracy_report(quality, tolerance, self.name)
        return Verdict(accuracy, {"logits": golden_logits})


def _scored_by_runtime(
    variant: Exported, tokens: np.ndarray, golden: np.ndarray, threads: int | None
) -> tuple[Logits, np.ndarray]:
    from converters.verifier import provisional_variant
    from runtimes import SessionOptions, get_runtime

    provisional = provisional_variant(variant)
    options = SessionOptions(threads=threads)
    with get_runtime(variant.backend).load(provisional, variant.workdir, options) as session:
        return Logits(tokens, session.score(tokens)), session.score(golden)
