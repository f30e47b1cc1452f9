"""TensorVerifier: a tensor model's variants run with their own runtime and compared with the source's outputs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from converters.sources import ModelSource
from converters.verifier import Exported, Golden, Reference, Verdict, Verifier
from converters.verify import chunks, compare, concat, summary, tolerance_for
from edge_sdk.bundle import AccuracyReport, FileEntry, Variant
from edge_sdk.bundle.files import sha256_file

GOLDEN_SAMPLES = 16


@dataclass(frozen=True, eq=False)
class TensorVerifier(Verifier):
    eval_inputs: dict[str, np.ndarray] | None = None  # default: the source's example inputs
    eval_labels: np.ndarray | None = None  # adds the task's accuracy metric
    max_accuracy_drop: float | None = None  # default: per quantization scheme
    pruned: bool = False  # a pruned model is judged on its decisions, not on matching logits

    def describe(self, source: ModelSource) -> str:
        count = len(next(iter(self._inputs(source).values())))
        return f"running {source.describe()} on {count} samples"

    def prepare(self, source: ModelSource, workdir: Path) -> Reference:
        inputs = self._inputs(source)
        outputs = concat([source.reference(c) for c in chunks(inputs, source.input_specs())])
        n = len(next(iter(outputs.values())))  # a fixed batch size may leave a remainder unrun
        eval_inputs = {k: v[:n] for k, v in inputs.items()}
        labels = self.eval_labels[:GOLDEN_SAMPLES] if self.eval_labels is not None else None
        golden = Golden(
            inputs={k: v[:GOLDEN_SAMPLES] for k, v in eval_inputs.items()},
            outputs={k: v[:GOLDEN_SAMPLES] for k, v in outputs.items()},
            labels=labels,
        )
        return TensorReference(
            golden=golden,
            verifier=self,
            eval_inputs=eval_inputs,
            outputs=outputs,
            name=f"the source model ({source.kind}, fp32)",
        )

    def refusal(self, variant_id: str, accuracy: AccuracyReport) -> str:
        return (
            f"variant {variant_id} is outside its accuracy tolerance against {accuracy.reference}: "
            f"{summary(accuracy)}. Use a milder quantization, give calibration data, or raise the "
            "tolerance (--max-accuracy-drop)."
        )

    def _inputs(self, source: ModelSource) -> dict[str, np.ndarray]:
        return self.eval_inputs if self.eval_inputs is not None else source.example_inputs


@dataclass(frozen=True, eq=False)
class TensorReference(Reference):
    verifier: TensorVerifier
    eval_inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]
    name: str

    def measure(self, variant: Exported) -> Verdict:
        outputs = _run_exported(variant, self.eval_inputs)
        v = self.verifier
        accuracy = compare(
            self.outputs,
            outputs,
            tolerance_for(variant.quantization, v.max_accuracy_drop, pruned=v.pruned),
            labels=v.eval_labels,
            reference_name=self.name,
        )
        return Verdict(accuracy, {k: o[:GOLDEN_SAMPLES] for k, o in outputs.items()})


def _run_exported(variant: Exported, eval_inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run the exported files with the backend's own runtime, exactly as a device will."""
    from runtimes import get_runtime

    result, workdir = variant.result, variant.workdir
    provisional = Variant(
        id=variant.variant_id,
        backend=variant.backend,
        inputs=result.inputs,
        outputs=result.outputs,
        recipe=result.recipe,
        runtime=result.runtime,
        files=tuple(
            FileEntry(path=str(p.relative_to(workdir)), sha256=sha256_file(p), size=p.stat().st_size)
            for p in result.files.values()
        ),
    )
    with get_runtime(variant.backend).load(provisional, workdir) as session:
        return concat([session.run(c) for c in chunks(eval_inputs, result.inputs)])
