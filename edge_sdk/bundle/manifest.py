"""The bundle manifest: what a bundle holds and what was measured about it.

Schema 2 added the input's sample axis (TensorSpec.sample_axis), preprocessing files (a tokenizer), class labels
and failed-variant records. Every schema-1 manifest is a valid schema-2 one with those left at their defaults.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from edge_sdk.bundle import safejson
from edge_sdk.errors import BundleError, UnsupportedSchemaError
from edge_sdk.types import Backend, QuantScheme, Task, TensorSpec

SCHEMA_VERSION = 2
MANIFEST_NAME = "manifest.json"
MAX_MANIFEST_BYTES = 16 * 1024 * 1024
_SEMVER = re.compile(r"^\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$")


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FileEntry(_Strict):
    path: str = Field(description="POSIX path relative to the bundle root")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)


class Recipe(_Strict):
    quantization: QuantScheme
    precision: str = Field(description="what the weights are stored as: fp32, fp16, int8, ...")
    pruning_ratio: float = Field(default=0.0, ge=0.0, lt=1.0)
    options: dict[str, str] = Field(default_factory=dict, description="backend-specific knobs, recorded as text")


class Metric(_Strict):
    name: str
    value: float
    reference: float | None = None
    tolerance: float
    higher_is_better: bool
    passed: bool


class AccuracyReport(_Strict):
    reference: str = Field(description="what the variant was compared with")
    samples: int = Field(ge=0)
    metrics: tuple[Metric, ...]
    passed: bool
    # Added after the first release: engines pick int8 kernels by CPU, so a verdict names the CPU that measured it.
    measured_on: str | None = Field(default=None, description="architecture and ISA features of the measuring host")

    def metric(self, name: str) -> Metric | None:
        return next((m for m in self.metrics if m.name == name), None)

    def __repr__(self) -> str:
        shown = ", ".join(f"{m.name}={m.value:.4g}{'' if m.passed else '(FAIL)'}" for m in self.metrics)
        return f"AccuracyReport({'passed' if self.passed else 'FAILED'}, {self.samples} samples: {shown})"


class FitReport(_Strict):
    profile: str
    fits: bool
    estimated_peak_bytes: int
    budget_bytes: int
    reasons: tuple[str, ...] = ()
    # Added after the first release: older bundles leave them empty.
    context: int | None = Field(default=None, description="the LLM context length the estimate is for")
    breakdown: dict[str, int] = Field(default_factory=dict, description="what the peak is made of, in bytes")
    suggestions: tuple[str, ...] = ()
    predicted_tokens_per_second: float | None = None
    predicted_latency_ms: float | None = None

    def __repr__(self) -> str:
        mib = 1024 * 1024
        verdict = "fits" if self.fits else f"does not fit: {'; '.join(self.reasons)[:120]}"
        return (
            f"FitReport({self.profile}: {verdict}, peak {self.estimated_peak_bytes / mib:.1f} MiB "
            f"of {self.budget_bytes / mib:.1f} MiB)"
        )


class RuntimeRequirement(_Strict):
    package: str
    version: str
    extra: str


class Variant(_Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    backend: Backend
    files: tuple[FileEntry, ...] = Field(min_length=1)
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    recipe: Recipe
    runtime: RuntimeRequirement
    accuracy: AccuracyReport | None = None
    fit: dict[str, FitReport] = Field(default_factory=dict)
    golden_outputs: FileEntry | None = Field(
        default=None, description="this variant's own outputs on the golden inputs, as measured on the host"
    )

    @property
    def size_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def __repr__(self) -> str:
        gate = "no gate" if self.accuracy is None else ("gate passed" if self.accuracy.passed else "gate FAILED")
        fits = ", ".join(f"{p}: {'fits' if r.fits else 'no'}" for p, r in self.fit.items())
        return (
            f"Variant({self.id!r}, {self.backend.value}, {self.recipe.quantization.value}, "
            f"{self.size_bytes / 1024 / 1024:.2f} MiB, {gate}{', ' + fits if fits else ''})"
        )


class Golden(_Strict):
    """Inputs with reference outputs, so the accuracy gate can be re-checked on the device."""

    inputs: FileEntry
    reference: FileEntry
    labels: FileEntry | None = None


class Preprocessing(_Strict):
    """What turns a user's text into the model's input tensors, carried so the device needs nothing else."""

    kind: str = Field(description="'text': tokenized with the `tokenizers` package")
    files: tuple[FileEntry, ...] = Field(min_length=1, description="tokenizer.json first")
    max_length: int = Field(ge=1, description="the longest token sequence the model takes")
    pooling: str | None = Field(default=None, description="how token states became one embedding (in the graph)")

    @property
    def tokenizer(self) -> FileEntry:
        return self.files[0]


class FailedVariant(_Strict):
    """A variant that could not be built (--allow-failed): recorded, so the bundle says what is missing and why."""

    id: str
    backend: Backend
    quantization: QuantScheme
    stage: str = Field(description="where it failed: export, verify")
    error: str


class SourceInfo(_Strict):
    kind: str = Field(description="torch, onnx, ...")
    digest: str
    description: str = ""


class Manifest(_Strict):
    schema_version: int
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    version: str
    task: Task
    created_by: str
    source: SourceInfo
    variants: tuple[Variant, ...] = Field(min_length=1)
    golden: Golden | None = None
    # Schema 2
    preprocessing: Preprocessing | None = None
    labels: tuple[str, ...] = Field(default=(), description="class names, by output index")
    failed: tuple[FailedVariant, ...] = ()
    _raw: dict[str, Any] | None = PrivateAttr(default=None)  # as read from disk: what a signature covered

    @field_validator("version")
    @classmethod
    def _semver(cls, value: str) -> str:
        if not _SEMVER.match(value):
            raise ValueError(f"version {value!r} is not semantic (MAJOR.MINOR.PATCH)")
        return value

    @field_validator("variants")
    @classmethod
    def _unique_ids(cls, variants: tuple[Variant, ...]) -> tuple[Variant, ...]:
        ids = [v.id for v in variants]
        if len(set(ids)) != len(ids):
            raise ValueError(f"variant ids repeat: {ids}")
        return variants

    def __eq__(self, other: object) -> bool:  # the private raw copy is not part of what a manifest says
        return isinstance(other, Manifest) and self.model_dump() == other.model_dump()

    __hash__ = BaseModel.__hash__

    def all_files(self) -> list[FileEntry]:
        files = [f for v in self.variants for f in v.files]
        files += [v.golden_outputs for v in self.variants if v.golden_outputs]
        if self.golden:
            files += [self.golden.inputs, self.golden.reference]
            if self.golden.labels:
                files.append(self.golden.labels)
        if self.preprocessing:
            files += self.preprocessing.files
        return files

    def canonical_bytes(self) -> bytes:
        """The bytes a signature covers: sorted keys, no whitespace. A manifest read from disk is signed as it
        was written, so fields a later schema added (at their defaults) do not change an older signature."""
        data = self._raw if self._raw is not None else self.model_dump(mode="json")
        return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def parse_manifest(raw: bytes) -> Manifest:
    """Parse manifest.json, refusing a newer schema before validating anything else."""
    data: Any = safejson.loads(raw, what=MANIFEST_NAME, max_bytes=MAX_MANIFEST_BYTES)
    if not isinstance(data, dict):
        raise BundleError("manifest.json must hold a JSON object")
    version = data.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise BundleError(f"manifest.json has no integer schema_version (got {version!r})")
    if version > SCHEMA_VERSION:
        raise UnsupportedSchemaError(
            f"bundle manifest has schema version {version}, this edge-sdk reads up to {SCHEMA_VERSION}: "
            "upgrade edge-sdk to read it"
        )
    if version < 1:
        raise BundleError(f"manifest.json has an invalid schema_version {version}")
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:8])
        raise BundleError(f"manifest.json is invalid: {problems}") from None
    manifest._raw = data
    return manifest
