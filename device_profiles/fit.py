"""Will it fit? A first memory estimate of a variant on a device profile, with the reasons when it does not.

peak ≈ weights on disk (engines map or copy them once) + activations + the engine's own resident overhead.
"""

from __future__ import annotations

from dataclasses import dataclass

from device_profiles.schema import DeviceProfile
from edge_sdk.bundle import FitReport
from edge_sdk.types import Backend, TensorSpec

MB = 1024 * 1024

# Resident memory of the engine itself (library + one session), measured on the host with VmRSS before and
# after importing the engine and running a small model. A first figure: boards differ by their builds.
ENGINE_OVERHEAD_BYTES: dict[Backend, int] = {
    Backend.ONNX: 48 * MB,  # onnxruntime 1.31.1, CPU EP: 47 MB measured
    Backend.EXECUTORCH: 40 * MB,
    Backend.GGUF: 30 * MB,
}
# Activations: inputs and outputs of one sample, times a margin for intermediate tensors.
ACTIVATION_FACTOR = 8


@dataclass(frozen=True)
class FitEstimate:
    weights_bytes: int
    activation_bytes: int
    overhead_bytes: int

    @property
    def peak_bytes(self) -> int:
        return self.weights_bytes + self.activation_bytes + self.overhead_bytes


def _tensor_bytes(spec: TensorSpec) -> int:
    count = 1
    for dim in spec.shape:
        count *= dim if isinstance(dim, int) else 1  # a symbolic batch dim counts as one sample
    return count * spec.dtype.numpy.itemsize


def estimate(
    backend: Backend, weights_bytes: int, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...]
) -> FitEstimate:
    io_bytes = sum(_tensor_bytes(s) for s in (*inputs, *outputs))
    return FitEstimate(weights_bytes, io_bytes * ACTIVATION_FACTOR, ENGINE_OVERHEAD_BYTES.get(backend, 64 * MB))


def check_fit(profile: DeviceProfile, backend: Backend, est: FitEstimate) -> FitReport:
    reasons = []
    if not profile.supports(backend):
        offered = [b.value for b in profile.backends if profile.supports(b)]
        reasons.append(f"{profile.id} has no {backend.value} runtime (it offers {', '.join(offered) or 'none'})")
    budget = profile.budget_bytes
    if est.peak_bytes > budget:
        reasons.append(
            f"needs {est.peak_bytes / MB:.1f} MB (weights {est.weights_bytes / MB:.1f} MB, "
            f"engine {est.overhead_bytes / MB:.0f} MB), budget {budget / MB:.0f} MB: quantize further or prune"
        )
    return FitReport(
        profile=profile.id,
        fits=not reasons,
        estimated_peak_bytes=est.peak_bytes,
        budget_bytes=budget,
        reasons=tuple(reasons),
    )
