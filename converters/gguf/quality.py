"""Tolerances per GGUF weight type and the accuracy report built from a measured Quality."""

from __future__ import annotations

from dataclasses import dataclass

from converters.gguf.evaluate import Quality
from device_profiles.host import host_isa
from edge_sdk.bundle import AccuracyReport, Metric
from edge_sdk.types import QuantScheme as Q


@dataclass(frozen=True)
class LlmTolerance:
    max_kl: float  # mean KL(reference || variant), nats
    max_top1_drop: float  # 1 - top-1 agreement
    max_ppl_increase: float  # relative: variant ppl / reference ppl - 1
    max_logit_diff: float | None = None  # absolute, checked only where the variant must equal the reference


# f32 must reproduce the reference to float rounding; the rest follow llama.cpp's published quality ladder, with
# room for a 135M model, which suffers more from quantization than the 7B models those figures come from.
LLM_TOLERANCE: dict[Q, LlmTolerance] = {
    Q.NONE: LlmTolerance(1e-6, 0.0, 1e-4, 1e-3),
    Q.F32: LlmTolerance(1e-6, 0.0, 1e-4, 1e-3),
    Q.FP16: LlmTolerance(0.005, 0.05, 0.01),
    Q.BF16: LlmTolerance(0.02, 0.08, 0.03),
    Q.Q8_0: LlmTolerance(0.02, 0.08, 0.03),
    Q.Q6_K: LlmTolerance(0.05, 0.12, 0.06),
    Q.Q5_1: LlmTolerance(0.1, 0.15, 0.1),
    Q.Q5_0: LlmTolerance(0.1, 0.15, 0.1),
    Q.Q5_K_M: LlmTolerance(0.1, 0.15, 0.1),
    Q.Q5_K_S: LlmTolerance(0.1, 0.15, 0.1),
    # Legacy 4-bit types: SmolLM2-135M re-quantized from its Q4_1 file measures KL 0.43, top-1 0.68, ppl +51 %.
    Q.Q4_1: LlmTolerance(0.5, 0.35, 0.6),
    Q.Q4_0: LlmTolerance(0.6, 0.4, 0.75),
    Q.Q4_K_M: LlmTolerance(0.3, 0.25, 0.3),
    Q.Q4_K_S: LlmTolerance(0.3, 0.25, 0.3),
    Q.Q3_K_L: LlmTolerance(0.6, 0.35, 0.6),
    Q.Q3_K_M: LlmTolerance(0.6, 0.35, 0.6),
    Q.Q3_K_S: LlmTolerance(0.8, 0.4, 0.8),
    Q.Q2_K: LlmTolerance(1.5, 0.5, 2.0),
    # Other engines' schemes, on the rung of the GGUF type they match: 8-bit weights with 8-bit dynamic
    # activations (ExecuTorch pt2e) as Q8_0; 4-bit weights in blocks of 32 (ExecuTorch 8da4w, ORT MatMulNBits,
    # both with 8-bit activations on CPU) as Q4_0, the GGUF type of the same layout.
    Q.INT8_DYNAMIC: LlmTolerance(0.02, 0.08, 0.03),
    Q.INT8DA_INT4W: LlmTolerance(0.6, 0.4, 0.75),
    Q.INT4: LlmTolerance(0.6, 0.4, 0.75),
}


# float32 on another engine than the reference's (llama.cpp): the same arithmetic summed in another order
# (XNNPACK's GEMMs, ORT's GroupQueryAttention) differs in the last bits. That moves the distribution far less
# than the mildest quantization (KL 1e-4 against Q8_0's 0.02) but can flip a near-tie top-1 pick (random
# weights leave many; one flip in 64 tokens is 1.6 %): top-1 gets fp16's rung, an upper bound on reordering.
CROSS_ENGINE_F32 = LlmTolerance(1e-4, 0.05, 1e-3)


def tolerance_for(scheme: Q, scale: float = 1.0, *, same_engine: bool = True) -> LlmTolerance:
    """The default tolerance of `scheme`, optionally loosened (scale > 1) or tightened (scale < 1);
    `same_engine=False`: the variant runs on another engine than the reference."""
    t = LLM_TOLERANCE[scheme]
    if not same_engine and scheme in (Q.F32, Q.NONE):
        t = CROSS_ENGINE_F32
    return LlmTolerance(
        t.max_kl * scale, min(1.0, t.max_top1_drop * scale), t.max_ppl_increase * scale, t.max_logit_diff
    )


def accuracy_report(quality: Quality, tolerance: LlmTolerance, reference: str) -> AccuracyReport:
    ppl_increase = quality.perplexity / quality.reference_perplexity - 1.0
    kl_ok = quality.mean_kl <= tolerance.max_kl
    top1_ok = 1.0 - quality.top1_agreement <= tolerance.max_top1_drop + 1e-12
    ppl_ok = ppl_increase <= tolerance.max_ppl_increase
    metrics: tuple[Metric, ...] = (
        Metric(name="mean_kl", value=quality.mean_kl, reference=0.0, tolerance=tolerance.max_kl,
               higher_is_better=False, passed=kl_ok),
        Metric(name="top1_agreement", value=quality.top1_agreement, reference=1.0,
               tolerance=tolerance.max_top1_drop, higher_is_better=True, passed=top1_ok),
        Metric(name="perplexity", value=quality.perplexity, reference=quality.reference_perplexity,
               tolerance=tolerance.max_ppl_increase, higher_is_better=False, passed=ppl_ok),
    )  # fmt: skip
    if tolerance.max_logit_diff is not None:
        diff = quality.max_abs_logit_diff
        metrics += (
            Metric(name="max_abs_logit_diff", value=diff, reference=0.0, tolerance=tolerance.max_logit_diff,
                   higher_is_better=False, passed=diff <= tolerance.max_logit_diff),
        )  # fmt: skip
    passed = all(m.passed for m in metrics)
    return AccuracyReport(
        reference=reference, samples=quality.positions, metrics=metrics, passed=passed, measured_on=host_isa()
    )


def summary(report: AccuracyReport) -> str:
    parts = []
    for m in report.metrics:
        verdict = "ok" if m.passed else "OUTSIDE"
        parts.append(f"{m.name}={m.value:.6g} (reference {m.reference:.6g}, tolerance {m.tolerance:g}: {verdict})")
    return "; ".join(parts)
