"""The one conversion loop with a stand-in exporter and verifier: what it asks of them, and what it does itself
(reference once, gate, golden set, progress, nothing written when a variant is refused)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

import converters.pipeline as pipeline
from converters.exporter import Exporter, ExportRequest, ExportResult
from converters.gguf.source_base import LlmSource
from converters.pipeline import ConvertOptions, convert, verifier_for
from converters.progress import Progress
from converters.sources import ModelSource
from converters.verifier import Exported, Golden, Reference, Verdict, Verifier
from edge_sdk.bundle import AccuracyReport, Metric, Recipe, RuntimeRequirement
from edge_sdk.errors import AccuracyGateError
from edge_sdk.types import Backend, QuantScheme, TensorSpec


class NumberSource(ModelSource):
    kind = "numbers"
    example_inputs = {"x": np.arange(4, dtype=np.float32)}  # noqa: RUF012

    def digest(self) -> str:
        return "sha256:" + "0" * 64

    def reference(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"y": inputs["x"] * 2}

    def describe(self) -> str:
        return "numbers"

    def input_specs(self) -> tuple[TensorSpec, ...]:
        return ()


class FileExporter(Exporter):
    backend = Backend.ONNX
    quantizations = (QuantScheme.NONE, QuantScheme.FP16)

    def export(self, request: ExportRequest) -> ExportResult:
        path = request.workdir / "model.bin"
        path.write_bytes(request.quantization.value.encode())
        return ExportResult(
            files={"model.bin": path}, inputs=(), outputs=(),
            recipe=Recipe(quantization=request.quantization, precision=request.quantization.value),
            runtime=RuntimeRequirement(package="none", version="0", extra="onnx"),
        )  # fmt: skip


class RefusesFp16(Verifier):
    """Passes every variant but fp16; counts how often the source is measured."""

    def __init__(self) -> None:
        self.prepared = 0

    def prepare(self, source: ModelSource, workdir: Path) -> Reference:
        self.prepared += 1
        assert workdir.is_dir()
        return ByQuantization(Golden(inputs={"x": np.zeros(2)}, outputs={"y": np.ones(2)}))

    def refusal(self, variant_id: str, accuracy: AccuracyReport) -> str:
        return f"{variant_id} refused"


class ByQuantization(Reference):
    def measure(self, variant: Exported) -> Verdict:
        assert (variant.workdir / "model.bin").read_bytes() == variant.quantization.value.encode()
        ok = variant.quantization is not QuantScheme.FP16
        metric = Metric(name="m", value=1.0, tolerance=0.0, higher_is_better=True, passed=ok)
        report = AccuracyReport(reference="r", samples=2, metrics=(metric,), passed=ok)
        return Verdict(report, {"y": np.full(2, 3.0)})


@pytest.fixture
def stand_in_exporter(monkeypatch):
    monkeypatch.setattr(pipeline, "get_exporter", lambda backend, kind=None: FileExporter())


def test_each_variant_is_exported_verified_and_gated_against_one_reference(stand_in_exporter, tmp_path):
    verifier, steps = RefusesFp16(), []
    schemes = [QuantScheme.NONE, QuantScheme.FP16]
    options = ConvertOptions(name="n", allow_failed=True)
    bundle = convert(
        NumberSource(), [Backend.ONNX], schemes, tmp_path / "b", options, progress=steps.append, verifier=verifier
    )
    assert verifier.prepared == 1
    assert [v.id for v in bundle.variants] == ["onnx-none", "onnx-fp16"]
    assert [v.accuracy.passed for v in bundle.variants if v.accuracy] == [True, False]
    golden = bundle.golden()
    assert golden is not None and np.array_equal(golden.inputs["x"], np.zeros(2))
    assert np.array_equal(bundle.golden_outputs(bundle.variant("onnx-fp16"))["y"], np.full(2, 3.0))
    assert [s.text() for s in steps] == [
        "reference", "export onnx-none", "verify onnx-none", "export onnx-fp16", "verify onnx-fp16",
        f"write {tmp_path / 'b'}",
    ]  # fmt: skip
    assert all(isinstance(s, Progress) for s in steps) and steps[-1].done == steps[-1].total == 2


def test_a_refused_variant_writes_nothing(stand_in_exporter, tmp_path):
    with pytest.raises(AccuracyGateError, match="onnx-fp16 refused"):
        convert(
            NumberSource(), [Backend.ONNX], [QuantScheme.NONE, QuantScheme.FP16], tmp_path / "b",
            ConvertOptions(name="n"), verifier=RefusesFp16(),
        )  # fmt: skip
    assert not (tmp_path / "b").exists()


def test_the_verifier_follows_the_source_kind():
    from converters.gguf.logits_verifier import LogitsVerifier
    from converters.tensor_verifier import TensorVerifier

    class Words(LlmSource):
        kind = "words"

        def load(self):
            raise NotImplementedError

        def digest(self) -> str:
            return ""

        def describe(self) -> str:
            return "words"

    options = ConvertOptions(name="n", max_accuracy_drop=0.05, prune=0.25)
    tensor = verifier_for(NumberSource(), options)
    assert isinstance(tensor, TensorVerifier) and tensor.max_accuracy_drop == 0.05 and tensor.pruned
    assert isinstance(verifier_for(Words(), options), LogitsVerifier)
