"""Predict a variant's peak memory and speed on a device profile, from numbers measured on the host.

Peak resident memory of a process that loads the variant and runs it:

    peak = Python with edge-sdk + the engine's own resident memory + weights × the engine's copy factor
           (+ llama.cpp's repacked copy of Q4_0 weights) + KV cache for the context + activations

Speed: LLM decode time per token = bytes read per token / memory bandwidth + compute per weight / the CPU's
vector rate; other models take a latency measured on the host and scale it by the profile's CPU.
Every constant below was measured on the host (x86_64, 2 cores, onnxruntime 1.31.1, executorch 1.5.1,
llama-cpp-python 0.3.36) in a fresh process reading VmHWM; benchmarks/fit_accuracy.py re-measures them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from device_profiles.gguf_header import header_int, read_gguf_header
from device_profiles.schema import DeviceProfile
from edge_sdk.bundle import Variant
from edge_sdk.types import Backend, QuantScheme, TensorSpec

MiB = 1024 * 1024

# Python 3.11 + numpy + edge-sdk with a bundle open: 48.8-50.7 MiB measured.
PROCESS_BYTES = 50 * MiB


@dataclass(frozen=True)
class EngineCost:
    resident_bytes: int  # the engine's libraries and one session, beyond the Python process
    weight_factor: float  # resident bytes per byte of weights file (copies made while loading)
    source: str


ENGINE_COSTS: dict[Backend, EngineCost] = {
    Backend.ONNX: EngineCost(35 * MiB, 1.6, "digits CNN and a 97 MiB MLP, fp32 and int8: 35 MiB + 1.6x weights"),
    # The Python runtime imports torch: that is most of its resident memory.
    Backend.EXECUTORCH: EngineCost(360 * MiB, 1.85, "digits CNN and a 97 MiB MLP: torch import + 1.85x weights"),
    # Weights are mmap'd once; the rest is the library and the compute buffer a decode touches.
    Backend.GGUF: EngineCost(38 * MiB, 1.0, "SmolLM2-135M q8_0/q4_1/q4_k_m, 200-token prompt: 38 MiB + weights"),
    Backend.TFLITE: EngineCost(64 * MiB, 1.0, "not measured: a guess"),
}
# The old name, still read by the daemon's memory budget.
ENGINE_OVERHEAD_BYTES = {b: c.resident_bytes for b, c in ENGINE_COSTS.items()}
# Inputs and outputs of one sample, times a margin for the intermediate tensors.
ACTIVATION_FACTOR = 8
# llama.cpp repacks these weight types into an interleaved second copy on CPUs with AVX2 or Arm dot product
# (measured: peak grows by the file's size for q4_0, "CPU_REPACK model buffer" in its log).
REPACKED = frozenset({QuantScheme.Q4_0})
KV_BYTES_PER_VALUE = 2  # llama.cpp's default KV cache type is f16
DEFAULT_CONTEXT = 2048  # tokens a llama.cpp session gets unless asked (runtimes/llama_cpp_adapter.py uses this)
# Bits per weight of each storage type (K-quant mixes averaged over a LLaMA-style model).
BITS_PER_WEIGHT: dict[QuantScheme, float] = {
    QuantScheme.NONE: 32, QuantScheme.F32: 32, QuantScheme.FP16: 16, QuantScheme.BF16: 16,
    QuantScheme.INT8_DYNAMIC: 8, QuantScheme.INT8_STATIC: 8, QuantScheme.Q8_0: 8.5, QuantScheme.Q6_K: 6.56,
    QuantScheme.Q5_1: 6.0, QuantScheme.Q5_K_M: 5.7, QuantScheme.Q5_K_S: 5.54, QuantScheme.Q5_0: 5.5,
    QuantScheme.Q4_1: 5.0, QuantScheme.Q4_K_M: 4.9, QuantScheme.Q4_K_S: 4.58, QuantScheme.Q4_0: 4.5,
    QuantScheme.Q3_K_L: 4.27, QuantScheme.Q3_K_M: 3.91, QuantScheme.Q3_K_S: 3.5, QuantScheme.Q2_K: 2.63,
    # 4 bits + a float32 scale per group of 32 (ExecuTorch 8da4w; ORT MatMulNBits adds 4-bit zero points)
    QuantScheme.INT8DA_INT4W: 5.0, QuantScheme.INT4: 5.1,
}  # fmt: skip

# Decode compute per weight, in "vector-lane cycles" (time × threads × GHz × lanes / weights), fitted to
# SmolLM2-135M decode on the host after the bandwidth term; types not measured take the nearest family.
_COMPUTE_PER_WEIGHT: dict[QuantScheme, float] = {
    QuantScheme.Q8_0: 1.73, QuantScheme.Q4_0: 1.70, QuantScheme.Q4_1: 2.62, QuantScheme.Q4_K_M: 2.86,
}  # fmt: skip
_DEFAULT_COMPUTE_PER_WEIGHT = 2.9


@dataclass(frozen=True)
class LlmShape:
    """What the KV cache and decode estimates need, from a GGUF header."""

    layers: int
    kv_heads: int
    head_dim: int
    embedding: int
    vocab: int
    trained_context: int
    kv_bytes_per_value: int = KV_BYTES_PER_VALUE
    fixed_context: int | None = None  # a KV cache allocated whole at export/load (ExecuTorch, ONNX GenAI)

    @property
    def kv_bytes_per_token(self) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * self.kv_bytes_per_value  # K and V

    @classmethod
    def from_llm_config(cls, path: Path) -> LlmShape | None:
        """The shape an ExecuTorch / ONNX GenAI language-model variant records in its llm_config.json: a float32
        KV cache of exactly its context (ExecuTorch's static cache, ORT GenAI's shared past/present buffer)."""
        import json

        raw = json.loads(path.read_text(encoding="utf-8"))
        if "layers" not in raw:
            return None
        return cls(
            layers=int(raw["layers"]), kv_heads=int(raw["kv_heads"]), head_dim=int(raw["head_dim"]),
            embedding=int(raw.get("hidden", 0)), vocab=int(raw["vocab_size"]),
            trained_context=int(raw.get("trained_context", raw["context_length"])),
            kv_bytes_per_value=int(raw.get("kv_bytes_per_value", 4)), fixed_context=int(raw["context_length"]),
        )  # fmt: skip

    @classmethod
    def from_gguf(cls, path: Path) -> LlmShape:
        header = read_gguf_header(path)
        arch = str(header.get("general.architecture", "llama"))

        def get(key: str, default: int = 0) -> int:
            return header_int(header, f"{arch}.{key}", default)

        heads = get("attention.head_count", 1) or 1
        embedding = get("embedding_length")
        return cls(
            layers=get("block_count"),
            kv_heads=get("attention.head_count_kv", heads),
            head_dim=get("attention.key_length", embedding // heads),
            embedding=embedding,
            vocab=get("vocab_size", header_int(header, "tokenizer.ggml.tokens", 0)),
            trained_context=get("context_length"),
        )


@dataclass(frozen=True)
class ModelFacts:
    """What an estimate needs to know about one variant."""

    backend: Backend
    quantization: QuantScheme
    weights_bytes: int
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()
    llm: LlmShape | None = None

    @classmethod
    def of_files(
        cls,
        backend: Backend,
        quantization: QuantScheme,
        files: list[Path],
        inputs: tuple[TensorSpec, ...] = (),
        outputs: tuple[TensorSpec, ...] = (),
    ) -> ModelFacts:
        gguf = next((f for f in files if f.suffix == ".gguf"), None)
        llm = LlmShape.from_gguf(gguf) if gguf is not None else None
        config = next((f for f in files if f.name == "llm_config.json"), None)
        if config is not None:
            llm = LlmShape.from_llm_config(config)
            files = [f for f in files if f.suffix not in (".json", ".jinja")]  # the tokenizer is not weights
        return cls(backend, quantization, sum(f.stat().st_size for f in files), inputs, outputs, llm)

    @classmethod
    def of_variant(cls, variant: Variant, root: Path) -> ModelFacts:
        """The facts of a variant in a bundle directory `root`."""
        files = [root / f.path for f in variant.files]
        return cls.of_files(variant.backend, variant.recipe.quantization, files, variant.inputs, variant.outputs)

    def with_quantization(self, quantization: QuantScheme) -> ModelFacts:
        """The same model stored another way: weights scaled by bits per weight."""
        ratio = BITS_PER_WEIGHT.get(quantization, 8) / BITS_PER_WEIGHT.get(self.quantization, 32)
        return ModelFacts(
            self.backend, quantization, int(self.weights_bytes * ratio), self.inputs, self.outputs, self.llm
        )

    @property
    def parameters(self) -> int:
        return int(self.weights_bytes * 8 / BITS_PER_WEIGHT.get(self.quantization, 32))


@dataclass(frozen=True)
class MemoryEstimate:
    parts: dict[str, int] = field(default_factory=dict)  # what the peak is made of, in bytes
    context: int | None = None

    @property
    def peak_bytes(self) -> int:
        return sum(self.parts.values())


def _tensor_bytes(spec: TensorSpec) -> int:
    count = 1
    for dim in spec.shape:
        count *= dim if isinstance(dim, int) else 1  # a symbolic batch dim counts as one sample
    return count * spec.dtype.numpy.itemsize


def default_context(facts: ModelFacts) -> int | None:
    """The context a session gets when none is asked for: the runtime's default, within what was trained."""
    if facts.llm is None:
        return None
    return min(DEFAULT_CONTEXT, facts.llm.trained_context or DEFAULT_CONTEXT)


def estimate_memory(
    facts: ModelFacts, context: int | None = None, profile: DeviceProfile | None = None
) -> MemoryEstimate:
    cost = ENGINE_COSTS.get(facts.backend, ENGINE_COSTS[Backend.TFLITE])
    parts = {
        "python": PROCESS_BYTES,
        "engine": cost.resident_bytes,
        "weights": int(facts.weights_bytes * cost.weight_factor),
    }
    io_bytes = sum(_tensor_bytes(s) for s in (*facts.inputs, *facts.outputs))
    if io_bytes:
        parts["activations"] = io_bytes * ACTIVATION_FACTOR
    if facts.llm is None:
        return MemoryEstimate(parts)
    ctx = facts.llm.fixed_context or context or default_context(facts) or DEFAULT_CONTEXT
    parts["kv_cache"] = ctx * facts.llm.kv_bytes_per_token
    if facts.quantization in REPACKED and (profile is None or _repacks(profile)):
        parts["repacked_weights"] = facts.weights_bytes
    return MemoryEstimate(parts, ctx)


def _repacks(profile: DeviceProfile) -> bool:
    return bool({"avx2", "dotprod", "i8mm"} & set(profile.cpu.features))


def vector_rate(profile: DeviceProfile, *, avx512: bool = True) -> float:
    """Vector lanes × GHz of one core: a relative measure of what one thread computes per second.

    `avx512=False` for engines built without it (llama.cpp is built portable, AVX2 at most: DEPENDENCIES.md)."""
    features = set(profile.cpu.features)
    lanes = 64.0 if avx512 and "avx512" in features else 32.0 if {"avx2", "avx512"} & features else 16.0
    if "dotprod" in features:
        lanes *= 2  # int8 dot products: the quantized kernels llama.cpp and XNNPACK use
    if "i8mm" in features:
        lanes *= 1.5
    return lanes * profile.cpu.max_freq_ghz


def llm_threads(profile: DeviceProfile) -> int:
    """llama-cpp-python's default: half the cores (the other half are usually hyper-threads or busy)."""
    return max(profile.cpu.cores // 2, 1)


@dataclass(frozen=True)
class SpeedEstimate:
    tokens_per_second: float | None = None  # decode, with the tokens asked for in the cache (default none)
    tokens_per_second_full: float | None = None  # decode, with the context full
    latency_ms: float | None = None  # one batch-1 call of a tensor model
    basis: str = ""


def estimate_decode(
    facts: ModelFacts, profile: DeviceProfile, context: int | None = None, kv_tokens: int = 0
) -> SpeedEstimate:
    """Decode tokens/s with `kv_tokens` already in the cache (and with it full): every weight and the filled part
    of the KV cache are read once per token."""
    if facts.llm is None:
        return SpeedEstimate(basis="not a language model")
    ctx = context or default_context(facts) or DEFAULT_CONTEXT
    bandwidth = profile.memory.bandwidth_gbps * 1e9
    per_weight = _COMPUTE_PER_WEIGHT.get(facts.quantization, _DEFAULT_COMPUTE_PER_WEIGHT)
    compute_s = facts.parameters * per_weight / (llm_threads(profile) * vector_rate(profile, avx512=False) * 1e9)

    def rate(kv_tokens: int) -> float:
        read = facts.weights_bytes + kv_tokens * facts.llm.kv_bytes_per_token  # type: ignore[union-attr]
        return 1.0 / (read / bandwidth + compute_s)

    return SpeedEstimate(
        tokens_per_second=rate(kv_tokens),
        tokens_per_second_full=rate(ctx),
        basis=f"{profile.memory.bandwidth_gbps:g} GB/s memory, {llm_threads(profile)} threads",
    )


def scale_latency(host_seconds: float, host: DeviceProfile, profile: DeviceProfile) -> SpeedEstimate:
    """A latency measured on the host, scaled by single-core vector rate (small models do not use many cores)."""
    ratio = vector_rate(host) / vector_rate(profile)
    return SpeedEstimate(
        latency_ms=host_seconds * 1e3 * ratio, basis=f"host {host_seconds * 1e3:.3g} ms × {ratio:.2g} (CPU ratio)"
    )
