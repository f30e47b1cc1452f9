"""Will it fit? A variant's predicted peak memory and speed on a device profile, with every reason it does not
and what to try instead (another quantization, a shorter context, another engine, pruning)."""

from __future__ import annotations

from device_profiles.estimate import (
    BITS_PER_WEIGHT,
    ENGINE_COSTS,
    ENGINE_OVERHEAD_BYTES,
    MemoryEstimate,
    ModelFacts,
    SpeedEstimate,
    estimate_decode,
    estimate_memory,
    scale_latency,
)
from device_profiles.schema import DeviceProfile
from edge_sdk.bundle import FitReport
from edge_sdk.errors import ConfigError
from edge_sdk.types import Backend, QuantScheme

__all__ = ["ENGINE_OVERHEAD_BYTES", "check_fit", "human"]

# Milder first: the first that fits is the one to suggest.
_LLM_LADDER = (
    QuantScheme.Q8_0, QuantScheme.Q6_K, QuantScheme.Q5_K_M, QuantScheme.Q4_K_M, QuantScheme.Q4_0,
    QuantScheme.Q3_K_M, QuantScheme.Q2_K,
)  # fmt: skip
_TENSOR_LADDER = (QuantScheme.FP16, QuantScheme.INT8_STATIC)
MIN_CONTEXT = 256
PRUNE_SUGGESTION = 0.5
_PART_NAMES = {
    "weights": "weights", "repacked_weights": "repacked weights", "kv_cache": "KV cache", "engine": "engine",
    "python": "Python", "activations": "activations",
}  # fmt: skip


def human(n: float) -> str:
    """Bytes in binary units, labelled as such (1 MiB = 1024² bytes): the one convention of every output."""
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"


def check_fit(
    profile: DeviceProfile,
    facts: ModelFacts,
    *,
    context: int | None = None,
    host: DeviceProfile | None = None,
    host_latency_s: float | None = None,
    min_tokens_per_second: float | None = None,
    max_latency_ms: float | None = None,
) -> FitReport:
    """Predict memory (and speed where it can) of one variant on `profile`; `fits` is False with each reason."""
    if context is not None and context < 1:
        raise ConfigError(f"context must be a positive number of tokens, got {context}")
    if context is not None and facts.llm is None:
        raise ConfigError("--context applies to language models; this variant is a tensor model")
    memory = estimate_memory(facts, context, profile)
    speed = _speed(facts, profile, memory.context, host, host_latency_s)
    reasons: list[str] = []
    suggestions: list[str] = []
    if not profile.supports(facts.backend):
        offered = [b.value for b in profile.backends if profile.supports(b)]
        reasons.append(f"{profile.id} has no {facts.backend.value} runtime (it offers {', '.join(offered) or 'none'})")
    trained = facts.llm.trained_context if facts.llm else 0
    if memory.context and trained and memory.context > trained:
        reasons.append(f"context {memory.context} exceeds the {trained} tokens the model was trained for")
        suggestions.append(f"context {trained}")
    if memory.peak_bytes > profile.budget_bytes:
        tries = _smaller(profile, facts, memory)
        suggestions += tries
        hint = f": try {' or '.join(tries)}" if tries else ": no smaller variant of it fits; choose a bigger device"
        reasons.append(
            f"needs {human(memory.peak_bytes)} ({_parts(memory)}), budget {human(profile.budget_bytes)}{hint}"
        )
    if min_tokens_per_second and speed.tokens_per_second and speed.tokens_per_second < min_tokens_per_second:
        reasons.append(
            f"decodes ≈{speed.tokens_per_second:.1f} tokens/s, below the {min_tokens_per_second:g} asked "
            f"({speed.basis}): a smaller quantization reads fewer bytes per token"
        )
    if max_latency_ms and speed.latency_ms and speed.latency_ms > max_latency_ms:
        reasons.append(
            f"takes ≈{speed.latency_ms:.3g} ms a call, over the {max_latency_ms:g} ms asked ({speed.basis}): "
            "try int8-static or pruning"
        )
    return FitReport(
        profile=profile.id,
        fits=not reasons,
        estimated_peak_bytes=memory.peak_bytes,
        budget_bytes=profile.budget_bytes,
        reasons=tuple(reasons),
        context=memory.context,
        breakdown=memory.parts,
        suggestions=tuple(dict.fromkeys(suggestions)),
        predicted_tokens_per_second=speed.tokens_per_second,
        predicted_latency_ms=speed.latency_ms,
    )


def _speed(
    facts: ModelFacts,
    profile: DeviceProfile,
    context: int | None,
    host: DeviceProfile | None,
    host_latency_s: float | None,
) -> SpeedEstimate:
    if facts.llm is not None:
        return estimate_decode(facts, profile, context)
    if host is not None and host_latency_s is not None:
        return scale_latency(host_latency_s, host, profile)
    return SpeedEstimate(basis="no host measurement")


def _parts(memory: MemoryEstimate) -> str:
    shown = []
    for key, value in sorted(memory.parts.items(), key=lambda kv: -kv[1]):
        label = _PART_NAMES.get(key, key)
        if key == "kv_cache":
            label += f" at context {memory.context}"
        shown.append(f"{label} {human(value)}")
    return ", ".join(shown)


def _smaller(profile: DeviceProfile, facts: ModelFacts, memory: MemoryEstimate) -> list[str]:
    """What would fit: the mildest smaller quantization, a shorter context, another engine, pruning."""
    budget, out = profile.budget_bytes, []
    ladder = _LLM_LADDER if facts.llm is not None else _TENSOR_LADDER
    current_bits = BITS_PER_WEIGHT.get(facts.quantization, 32)
    for scheme in ladder:
        if BITS_PER_WEIGHT[scheme] >= current_bits:
            continue
        peak = estimate_memory(facts.with_quantization(scheme), memory.context, profile).peak_bytes
        if peak <= budget:
            out.append(f"{scheme.value} (≈{human(peak)})")
            break
    if facts.llm is not None and memory.context:
        trained = facts.llm.trained_context or memory.context
        ctx = min(memory.context // 2, trained)
        while ctx >= MIN_CONTEXT:
            peak = estimate_memory(facts, ctx, profile).peak_bytes
            if peak <= budget:
                out.append(f"context {ctx} (≈{human(peak)})")
                break
            ctx //= 2
    if facts.llm is None:
        for backend in (Backend.ONNX, Backend.EXECUTORCH, Backend.TFLITE):
            if backend is facts.backend or not profile.supports(backend) or backend not in ENGINE_COSTS:
                continue
            other = ModelFacts(backend, facts.quantization, facts.weights_bytes, facts.inputs, facts.outputs)
            peak = estimate_memory(other, None, profile).peak_bytes
            if peak <= budget:
                out.append(f"the {backend.value} backend (≈{human(peak)})")
                break
        pruned = ModelFacts(
            facts.backend, facts.quantization, int(facts.weights_bytes * PRUNE_SUGGESTION), facts.inputs, facts.outputs
        )
        peak = estimate_memory(pruned, None, profile).peak_bytes
        if peak <= budget:
            out.append(f"--prune {PRUNE_SUGGESTION} (≈{human(peak)})")
    return out
