"""The DeviceProfile schema: one YAML file a device, every section citing where its numbers come from."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from edge_sdk.types import Backend


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DeviceClass(StrEnum):
    SBC = "sbc"
    JETSON = "jetson"
    PHONE = "phone"
    HOST = "host"


class Cpu(_Strict):
    arch: str = Field(description="aarch64, x86_64, ...")
    model: str
    cores: int = Field(gt=0)
    max_freq_ghz: float = Field(gt=0)
    features: tuple[str, ...] = Field(description="ISA features: neon, dotprod, i8mm, fp16, avx2, avx512, amx")
    source: str


class Memory(_Strict):
    total_mb: int = Field(gt=0)
    budget_mb: int = Field(gt=0, description="what a model may use after the OS and other services")
    bandwidth_gbps: float = Field(gt=0, description="sustained DRAM bandwidth, GB/s")
    source: str


class Accelerator(_Strict):
    kind: str = Field(description="gpu, npu, dsp")
    name: str
    tops: float | None = Field(default=None, ge=0, description="int8 TOPS where published")
    shared_memory: bool = True
    source: str


class Storage(_Strict):
    kind: str
    size_gb: int = Field(gt=0)
    source: str


class OperatingSystem(_Strict):
    name: str
    version: str


class Power(_Strict):
    typical_w: float = Field(gt=0)
    max_w: float = Field(gt=0)
    source: str


class BackendSupport(_Strict):
    """What one engine offers on this device."""

    supported: bool = True
    runtime_version: str | None = None
    targets: tuple[str, ...] = Field(
        default=(), description="ExecuTorch delegates, ONNX Runtime execution providers, llama.cpp builds"
    )
    notes: str | None = None


class DeviceProfile(_Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    name: str
    device_class: DeviceClass = Field(alias="class")
    cpu: Cpu
    memory: Memory
    accelerators: tuple[Accelerator, ...] = ()
    storage: Storage
    os: OperatingSystem
    power: Power
    backends: dict[Backend, BackendSupport]

    def supports(self, backend: Backend) -> bool:
        support = self.backends.get(backend)
        return support is not None and support.supported

    @property
    def budget_bytes(self) -> int:
        return self.memory.budget_mb * 1024 * 1024
