"""Synthetic bundles for the kernel tests: written with BundleWriter from random bytes, no engine involved.

The kernel verifies bytes, digests and layout; it never parses a model file. So a few KB of seeded random
bytes stand in for `model.onnx` / `model.pte`, and `tests/kernel` runs without torch or any engine
(tests/test_kernel_without_engines.py holds it to that).
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from edge_sdk.bundle import (
    AccuracyReport,
    Bundle,
    BundleWriter,
    FitReport,
    Metric,
    Recipe,
    RuntimeRequirement,
    SourceInfo,
)
from edge_sdk.types import Backend, DType, QuantScheme, Task, TensorSpec

NAME = "tiny-net"
PROFILES = ("rpi5", "rpi4")
GOLDEN_SAMPLES = 6
INPUTS = (TensorSpec(name="input", dtype=DType.FLOAT32, shape=("batch", 1, 8, 8)),)
OUTPUTS = (TensorSpec(name="output", dtype=DType.FLOAT32, shape=("batch", 10)),)


@dataclass(frozen=True)
class SyntheticVariant:
    id: str
    backend: Backend
    filename: str
    quantization: QuantScheme
    precision: str
    size: int = 4096  # big enough that a flipped middle byte and a 10-byte truncation are distinct damage


# Two engines in one bundle, as the converters write them; only ids, enums and bytes matter to the kernel.
VARIANTS = (
    SyntheticVariant("onnx-fp32", Backend.ONNX, "model.onnx", QuantScheme.NONE, "fp32"),
    SyntheticVariant("executorch-int8", Backend.EXECUTORCH, "model.pte", QuantScheme.INT8_STATIC, "int8"),
)

MakeBundle = Callable[..., Bundle]


def _seed(text: str) -> int:
    # Stable across runs and processes (hash() is salted): the same arguments give byte-identical bundles.
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


def _accuracy() -> AccuracyReport:
    metric = Metric(name="accuracy", value=0.95, reference=0.96, tolerance=0.02, higher_is_better=True, passed=True)
    return AccuracyReport(reference="synthetic fp32", samples=GOLDEN_SAMPLES, metrics=(metric,), passed=True)


def _fit(size: int) -> dict[str, FitReport]:
    return {p: FitReport(profile=p, fits=True, estimated_peak_bytes=3 * size, budget_bytes=1 << 30) for p in PROFILES}


@pytest.fixture(scope="session")
def synthetic_bundle(tmp_path_factory) -> MakeBundle:
    """`synthetic_bundle(dest=None, *, name, version, created_by, variants, golden)` -> a written Bundle."""

    def make(
        dest: Path | None = None,
        *,
        name: str = NAME,
        version: str = "1.0.0",
        created_by: str = "tests/kernel",
        variants: Sequence[SyntheticVariant] = VARIANTS,
        golden: bool = True,
    ) -> Bundle:
        dest = dest or tmp_path_factory.mktemp("synthetic") / name
        rng = np.random.default_rng(_seed(name))
        inputs = {"input": rng.standard_normal((GOLDEN_SAMPLES, 1, 8, 8)).astype(np.float32)}
        reference = {"output": rng.standard_normal((GOLDEN_SAMPLES, 10)).astype(np.float32)}
        labels = rng.integers(0, 10, GOLDEN_SAMPLES)
        source = SourceInfo(kind="synthetic", digest=hashlib.sha256(name.encode()).hexdigest())
        writer = BundleWriter(
            name=name, version=version, task=Task.CLASSIFICATION, source=source, created_by=created_by
        )
        files = tmp_path_factory.mktemp("synthetic-files")
        try:
            if golden:
                writer.set_golden(inputs, reference, labels)
            for v in variants:
                model = files / v.id / v.filename
                model.parent.mkdir()
                model.write_bytes(np.random.default_rng(_seed(v.id)).bytes(v.size))
                writer.add_variant(
                    variant_id=v.id,
                    backend=v.backend,
                    files={v.filename: model},
                    inputs=INPUTS,
                    outputs=OUTPUTS,
                    recipe=Recipe(quantization=v.quantization, precision=v.precision),
                    runtime=RuntimeRequirement(
                        package=f"{v.backend.value}-engine", version="0.0.0", extra=v.backend.value
                    ),
                    accuracy=_accuracy(),
                    fit=_fit(v.size),
                    golden_outputs={"output": reference["output"] + 0.01} if golden else None,
                )
            return writer.write(dest)
        except BaseException:
            writer.discard()  # the stage lives in the system temp dir, which some tests watch for leaks
            raise
        finally:
            shutil.rmtree(files, ignore_errors=True)

    return make


@pytest.fixture(scope="session")
def tiny_bundle(synthetic_bundle: MakeBundle) -> Bundle:
    """One synthetic bundle per run, read-only: damage `tiny_copy` instead."""
    return synthetic_bundle()


@pytest.fixture
def tiny_copy(tiny_bundle: Bundle, tmp_path: Path) -> Path:
    """A private copy of `tiny_bundle`'s directory that a test may damage."""
    return shutil.copytree(tiny_bundle.root, tmp_path / "copy")
