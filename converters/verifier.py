"""What the conversion loop asks of a verifier: measure the source once, then judge each exported variant.

A tensor model is judged on its output tensors (converters.tensor_verifier), a language model on its logits over
text (converters.gguf.logits_verifier); the loop itself knows neither.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from converters.exporter import ExportResult
from converters.sources import ModelSource
from edge_sdk.bundle import AccuracyReport, FileEntry, Variant
from edge_sdk.types import Backend, QuantScheme


@dataclass(frozen=True, eq=False)
class Golden:
    """Inputs and reference outputs the bundle carries, so a device can re-check the gate at install."""

    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]
    labels: np.ndarray | None = None


@dataclass(frozen=True)
class Exported:
    """A variant just exported into `workdir`, not yet in the bundle."""

    variant_id: str
    backend: Backend
    quantization: QuantScheme
    result: ExportResult
    workdir: Path


def provisional_variant(variant: Exported) -> Variant:
    """The manifest entry the exported files will have, so a runtime can load them from the workdir."""
    from edge_sdk.bundle.files import sha256_file

    result, workdir = variant.result, variant.workdir
    return Variant(
        id=variant.variant_id, backend=variant.backend, inputs=result.inputs, outputs=result.outputs,
        recipe=result.recipe, runtime=result.runtime,
        files=tuple(
            FileEntry(path=str(p.relative_to(workdir)), sha256=sha256_file(p), size=p.stat().st_size)
            for p in result.files.values()
        ),
    )  # fmt: skip


@dataclass(frozen=True, eq=False)
class Verdict:
    accuracy: AccuracyReport | None  # None: nothing to compare with (a file bundled as it is)
    golden_outputs: dict[str, np.ndarray]  # the variant's own outputs on the golden inputs


@dataclass(frozen=True, eq=False)
class Reference(ABC):
    """The source measured once: the golden set the bundle carries, and the judge of every variant."""

    golden: Golden

    @abstractmethod
    def measure(self, variant: Exported) -> Verdict:
        """Run the exported variant as a device will and compare it with the reference, metric by metric."""


class Verifier(ABC):
    def describe(self, source: ModelSource) -> str:
        """What `prepare` runs, for the progress display."""
        return ""

    @abstractmethod
    def prepare(self, source: ModelSource, workdir: Path) -> Reference:
        """Measure the source once; `workdir` lives until the last variant is measured."""

    @abstractmethod
    def refusal(self, variant_id: str, accuracy: AccuracyReport) -> str:
        """Why the variant is refused (AccuracyGateError), with its numbers and what the user can change."""
