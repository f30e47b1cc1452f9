"""TensorVerifier: a tensor model's variants run with their own runtime and compared with the source's outputs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from converters.metrics import advice
from converters.sources import ModelSource
from converters.verifier import Exported, Golden, Reference, Verdict, Verifier
from converters.verify import chunks, compare, concat, sample_count, summary, take, tolerance_for
from edge_sdk.bundle import AccuracyReport, FileEntry, Variant
from edge_sdk.bundle.files import sha256_file
from edge_sdk.types import Task

GOLDEN_SAMPLES = 16


@dataclass(frozen=True, eq=False)
class TensorVerifier(Verifier):
    eval_inputs: dict[str, np.ndarray] | None = None  # default: the source's example inputs
    eval_labels: np.ndarray | None = None  # adds the task's accuracy metric
    max_accuracy_drop: float | None = None  # default: per quantization scheme
    pruned: bool = False  # a pruned model is judged on its decisions, not on matching logits
    task: Task = Task.TENSOR  # decides the metrics (converters.metrics)

    def describe(self, source: ModelSource) -> str:
        count = sample_count(self._inputs(source), source.input_specs())
        return f"running {source.describe()} on {count} samples"

    def prepare(self, source: ModelSource, workdir: Path) -> Reference:
        inputs, specs, out_specs = self._inputs(source), source.input_specs(), source.output_specs()
        outputs = concat([source.reference(c) for c in chunks(inputs, specs)], out_specs)
        n = sample_count(outputs, out_specs)  # a fixed batch size may leave a remainder unrun
        eval_inputs = take(inputs, specs, 0, n)
        labels = self.eval_labels[:GOLDEN_SAMPLES] if self.eval_labels is not None else None
        golden = Golden(
            inputs=take(eval_inputs, specs, 0, GOLDEN_SAMPLES),
            outputs=take(outputs, out_specs, 0, GOLDEN_SAMPLES),
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
            f"{summary(accuracy)}. {advice(accuracy)}"
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
        outputs, golden_outputs = _run_exported(variant, self.eval_inputs, self.golden.inputs)
        v = self.verifier
        accuracy = compare(
            self.outputs,
            outputs,
            tolerance_for(variant.quantization, v.max_accuracy_drop, pruned=v.pruned),
            labels=v.eval_labels,
            reference_name=self.name,
            task=v.task,
        )
        return Verdict(accuracy, golden_outputs)


def _run_exported(
    variant: Exported, eval_inputs: dict[str, np.ndarray], golden_inputs: dict[str, np.ndarray]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Run the exported files with the backend's own runtime, exactly as a device will: the evaluation set, and
    the golden set on its own, in the batch a device replays it with (dynamic int8 ranges depend on the batch)."""
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
        outputs = concat([session.run(c) for c in chunks(eval_inputs, result.inputs)], result.outputs)
        golden = concat([session.run(c) for c in chunks(golden_inputs, result.inputs)], result.outputs)
    return outputs, golden
