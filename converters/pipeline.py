"""convert(): for each backend × quantization, export, run the artifact, gate its accuracy, check fit, bundle."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np

from converters.exporter import Exporter, ExportRequest, ExportResult
from converters.prune import TrainData
from converters.sources import ModelSource
from converters.verify import chunks, compare, concat, summary, tolerance_for
from device_profiles import DeviceProfile
from device_profiles.estimate import ModelFacts
from device_profiles.fit import check_fit
from edge_sdk import __version__, registry
from edge_sdk.bundle import Bundle, BundleWriter, FileEntry, SourceInfo, Variant
from edge_sdk.bundle.files import sha256_file
from edge_sdk.errors import AccuracyGateError, ConfigError
from edge_sdk.types import Backend, QuantScheme, Task

GOLDEN_SAMPLES = 16


@dataclass(frozen=True)
class Progress:
    """What the pipeline is doing now; the CLI turns these into a progress display."""

    step: str  # "reference", "export", "verify", "write"
    variant: str | None
    done: int
    total: int
    detail: str = ""


ProgressCallback = Callable[[Progress], None]


@dataclass(frozen=True)
class ConvertOptions:
    name: str
    version: str = "1.0.0"
    task: Task = Task.TENSOR
    profiles: tuple[DeviceProfile, ...] = ()
    calibration: dict[str, np.ndarray] | None = None
    eval_inputs: dict[str, np.ndarray] | None = None
    eval_labels: np.ndarray | None = None
    max_accuracy_drop: float | None = None
    allow_failed: bool = False  # keep variants outside tolerance (recorded as failed) instead of refusing
    min_delegated: float | None = None  # least share of compute an accelerator delegate must take (0..1)
    prune: float = 0.0  # share of channels removed (structured), then recovered by distillation on `train`
    sparsity: float = 0.0  # share of weights zeroed (unstructured): recorded, with what it does not buy
    train: TrainData | None = None


def get_exporter(backend: Backend) -> Exporter:
    return cast(type[Exporter], registry.load(backend, registry.Role.EXPORTER))()


def convert(
    source: ModelSource,
    backends: Sequence[Backend],
    quantizations: Sequence[QuantScheme],
    output: Path,
    options: ConvertOptions,
    *,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    pairs: Sequence[tuple[Backend, QuantScheme]] | None = None,
) -> Bundle:
    """One variant per backend × quantization (or per (backend, quantization) in `pairs`, when given)."""
    report = progress or (lambda _p: None)
    plan = list(pairs) if pairs is not None else [(b, q) for b in backends for q in quantizations]
    if not plan:
        raise ConfigError("nothing to convert: give at least one backend and one quantization")
    exporters = {b: get_exporter(b) for b in dict.fromkeys(b for b, _ in plan)}
    for backend, scheme in plan:  # refuse an impossible combination before spending time on any
        exporters[backend].check(scheme)

    export_source, pruned_options, suffix = _pruned(source, options)
    eval_inputs = options.eval_inputs if options.eval_inputs is not None else source.example_inputs
    report(Progress("reference", None, 0, len(plan), f"running {source.describe()} on {_count(eval_inputs)} samples"))
    reference = concat([source.reference(c) for c in chunks(eval_inputs, source.input_specs())])
    n = len(next(iter(reference.values())))
    eval_inputs = {k: v[:n] for k, v in eval_inputs.items()}

    writer = BundleWriter(
        name=options.name,
        version=options.version,
        task=options.task,
        created_by=f"edge-sdk {__version__}",
        source=SourceInfo(kind=source.kind, digest=source.digest(), description=source.describe()),
    )
    try:
        golden = {k: v[:GOLDEN_SAMPLES] for k, v in eval_inputs.items()}
        labels = options.eval_labels[:GOLDEN_SAMPLES] if options.eval_labels is not None else None
        writer.set_golden(golden, {k: v[:GOLDEN_SAMPLES] for k, v in reference.items()}, labels)
        for i, (backend, scheme) in enumerate(plan):
            variant_id = f"{backend.value}-{scheme.value}{suffix}"
            with tempfile.TemporaryDirectory(prefix="edge-export-") as tmp:
                report(Progress("export", variant_id, i, len(plan)))
                result = exporters[backend].export(
                    ExportRequest(export_source, scheme, Path(tmp), options.calibration, options.min_delegated)
                )
                if pruned_options:
                    result.recipe = result.recipe.model_copy(
                        update={"pruning_ratio": options.prune, "options": {**result.recipe.options, **pruned_options}}
                    )
                report(Progress("verify", variant_id, i, len(plan)))
                outputs = _run_exported(backend, variant_id, result, Path(tmp), eval_inputs)
                accuracy = compare(
                    reference,
                    outputs,
                    tolerance_for(scheme, options.max_accuracy_drop, pruned=bool(options.prune or options.sparsity)),
                    labels=options.eval_labels,
                    reference_name=f"the source model ({source.kind}, fp32)",
                )
                if not accuracy.passed and not options.allow_failed:
                    raise AccuracyGateError(
                        f"variant {variant_id} is outside its accuracy tolerance against {accuracy.reference}: "
                        f"{summary(accuracy)}. Use a milder quantization, give calibration data, or raise the "
                        "tolerance (--max-accuracy-drop)."
                    )
                facts = ModelFacts.of_files(backend, scheme, list(result.files.values()), result.inputs, result.outputs)
                fit = {p.id: check_fit(p, facts) for p in options.profiles}
                writer.add_variant(
                    variant_id=variant_id,
                    backend=backend,
                    files=result.files,
                    inputs=result.inputs,
                    outputs=result.outputs,
                    recipe=result.recipe,
                    runtime=result.runtime,
                    accuracy=accuracy,
                    fit=fit,
                    golden_outputs={k: v[:GOLDEN_SAMPLES] for k, v in outputs.items()},
                )
        report(Progress("write", None, len(plan), len(plan), str(output)))
        return writer.write(output, overwrite=overwrite)
    finally:
        writer.discard()


def _pruned(source: ModelSource, options: ConvertOptions) -> tuple[ModelSource, dict[str, str], str]:
    """The source to export (pruned and recovered, or sparsified), what the recipe records, the id suffix."""
    if not options.prune and not options.sparsity:
        return source, {}, ""
    from converters.prune import prune_and_recover, sparsify
    from converters.sources import TorchSource

    if not isinstance(source, TorchSource):
        raise ConfigError(f"pruning needs a torch model to remove channels from; {source.describe()} is {source.kind}")
    if options.prune and options.sparsity:
        raise ConfigError("give either --prune (structured) or --sparsity (unstructured), not both")
    if options.prune:
        module, report = prune_and_recover(source.module, source.example_inputs, options.prune, options.train)
        recorded, suffix = report.as_options(), f"-pruned{round(options.prune * 100)}"
    else:
        module, recorded = sparsify(source.module, options.sparsity)
        suffix = f"-sparse{round(options.sparsity * 100)}"
    pruned = TorchSource(module, source.example_inputs, source.output_names, source.describe())
    return pruned, recorded, suffix


def _count(arrays: dict[str, np.ndarray]) -> int:
    return len(next(iter(arrays.values())))


def _run_exported(
    backend: Backend, variant_id: str, result: ExportResult, workdir: Path, eval_inputs: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Run the exported files with the backend's own runtime, exactly as a device will."""
    from runtimes import get_runtime

    provisional = Variant(
        id=variant_id,
        backend=backend,
        inputs=result.inputs,
        outputs=result.outputs,
        recipe=result.recipe,
        runtime=result.runtime,
        files=tuple(
            FileEntry(path=str(p.relative_to(workdir)), sha256=sha256_file(p), size=p.stat().st_size)
            for p in result.files.values()
        ),
    )
    with get_runtime(backend).load(provisional, workdir) as session:
        return concat([session.run(c) for c in chunks(eval_inputs, result.inputs)])
