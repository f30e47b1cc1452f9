"""convert(): the one conversion loop. The reference and golden set are prepared once; then for each
backend × quantization: export, verify, gate, check fit, add to the bundle; then write it.

Exporters come from the registry by backend; the verifier by the source's kind (converters.verifier).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np

from converters.exporter import Exporter, ExportRequest
from converters.progress import Progress, ProgressCallback
from converters.prune import TrainData
from converters.sources import ModelSource
from converters.threads import threads_for
from converters.verifier import Exported, Verifier
from device_profiles import DeviceProfile
from device_profiles.estimate import ModelFacts
from device_profiles.fit import check_fit
from edge_sdk import registry
from edge_sdk.bundle import Bundle, BundleWriter, FailedVariant, SourceInfo, Variant
from edge_sdk.errors import AccuracyGateError, ConfigError, EdgeSDKError
from edge_sdk.types import Backend, CalibrationMethod, QuantScheme, Task
from edge_sdk.version import __version__


@dataclass(frozen=True)
class ConvertOptions:
    name: str
    version: str = "1.0.0"
    task: Task = Task.TENSOR
    profiles: tuple[DeviceProfile, ...] = ()
    calibration: dict[str, np.ndarray] | None = None
    eval_inputs: dict[str, np.ndarray] | None = None
    eval_labels: np.ndarray | None = None
    max_accuracy_drop: float | None = None  # also makes int8 accuracy-aware (converters.mixed_precision)
    calibration_method: CalibrationMethod | None = None  # static int8; None: the default for the model's kind
    allow_failed: bool = False  # keep variants outside tolerance (recorded as failed) instead of refusing
    min_delegated: float | None = None  # least share of compute an accelerator delegate must take (0..1)
    prune: float = 0.0  # share of channels removed (structured), then recovered by distillation on `train`
    sparsity: float = 0.0  # share of weights zeroed (unstructured): recorded, with what it does not buy
    train: TrainData | None = None
    context: int | None = None  # a language model's KV cache in tokens (ExecuTorch, ONNX GenAI); None: default


@dataclass(frozen=True, eq=False)
class Added:
    """A variant as the loop adds it to the bundle (its files under `root`), or why it failed: what a caller
    that judges variants one by one (the planner) needs before the bundle is written."""

    variant: Variant | None
    root: Path  # the staged bundle: the variant's file paths are relative to it
    golden_inputs: Mapping[str, np.ndarray]
    failed: FailedVariant | None = None


VariantHook = Callable[[Added], None]
# Sees each export before it is measured (with the golden inputs); False: it is neither measured nor bundled (the
# planner's dominated candidates, recorded by the planner itself).
ScreenHook = Callable[["Exported", Mapping[str, np.ndarray]], bool]


def get_exporter(backend: Backend, kind: registry.SourceKind = registry.SourceKind.TENSOR) -> Exporter:
    """The exporter of `backend` for a model of `kind` (a backend may export language models separately)."""
    return cast(type[Exporter], registry.load(backend, registry.exporter_role(backend, kind)))()


def source_kind(source: ModelSource) -> registry.SourceKind:
    from converters.gguf.source_base import LlmSource

    return registry.SourceKind.LANGUAGE_MODEL if isinstance(source, LlmSource) else registry.SourceKind.TENSOR


def verifier_for(source: ModelSource, options: ConvertOptions) -> Verifier:
    """A language model is judged on its logits over text; any other model on its output tensors."""
    from converters.gguf.source_base import LlmSource

    if isinstance(source, LlmSource):
        from converters.gguf.logits_verifier import LogitsVerifier

        return LogitsVerifier()
    from converters.tensor_verifier import TensorVerifier

    return TensorVerifier(
        options.eval_inputs,
        options.eval_labels,
        options.max_accuracy_drop,
        bool(options.prune or options.sparsity),
        options.task,
    )


def variant_id(backend: Backend, scheme: QuantScheme | str, suffix: str = "") -> str:
    """'onnx-int8-static', 'gguf-q4-k-m', 'onnx-none-pruned50', 'gguf-as-is': hyphens only, whatever the
    scheme's spelling (a string is an exporter's own label for its quantization)."""
    label = scheme.value if isinstance(scheme, QuantScheme) else scheme
    return f"{backend.value}-{label.replace('_', '-')}{suffix}"


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
    verifier: Verifier | None = None,
    exporters: Mapping[Backend, Exporter] | None = None,
    on_variant: VariantHook | None = None,
    screen: ScreenHook | None = None,
) -> Bundle:
    """One variant per backend × quantization (or per (backend, quantization) in `pairs`, when given).

    `verifier` judges each variant (default: `verifier_for` the source); `exporters` replace the registry's for
    their backends (a GGUF bundled as it is hands its file over unchanged). A variant outside its tolerance raises
    AccuracyGateError with the numbers, unless `options.allow_failed` keeps it, recorded as failed; with it, a
    variant whose export or verification raises is recorded in the manifest's `failed` list and the others kept.
    Each backend exports the source once for all its quantizations. `on_variant` sees each variant (or failure)
    as it is added; `screen` may stop a variant between its export and its measurement.
    """
    report = progress if progress is not None else (lambda _p: None)
    plan = list(pairs) if pairs is not None else [(b, q) for b in backends for q in quantizations]
    if not plan:
        raise ConfigError("nothing to convert: give at least one backend and one quantization")
    given = exporters or {}
    kind = source_kind(source)
    chosen = {b: given[b] if b in given else get_exporter(b, kind) for b in dict.fromkeys(b for b, _ in plan)}
    for backend, scheme in plan:  # refuse an impossible combination before spending time on any
        chosen[backend].check(scheme)
    for exporter in chosen.values():
        exporter.check_source(source, options.context)

    with threads_for(getattr(source, "module", None)):
        return _convert(source, plan, output, options, chosen, overwrite, report, verifier, on_variant, screen)


def _convert(
    source: ModelSource,
    plan: list[tuple[Backend, QuantScheme]],
    output: Path,
    options: ConvertOptions,
    chosen: dict[Backend, Exporter],
    overwrite: bool,
    report: ProgressCallback,
    verifier: Verifier | None,
    on_variant: VariantHook | None,
    screen: ScreenHook | None = None,
) -> Bundle:
    export_source, pruned_options, suffix = _pruned(source, options)
    judge = verifier or verifier_for(source, options)
    writer = BundleWriter(
        name=options.name,
        version=options.version,
        task=options.task,
        created_by=f"edge-sdk {__version__}",
        source=SourceInfo(kind=source.kind, digest=source.digest(), description=source.describe()),
    )
    try:
        with tempfile.TemporaryDirectory(prefix="edge-convert-") as tmp:
            report(Progress("reference", None, 0, len(plan), judge.describe(source)))
            (Path(tmp) / "reference").mkdir()
            reference = judge.prepare(source, Path(tmp) / "reference")  # the unpruned source: what users had
            writer.set_golden(reference.golden.inputs, reference.golden.outputs, reference.golden.labels)
            _carry_preprocessing(source, writer)
            added = on_variant or (lambda _a: None)
            for backend in chosen:
                (Path(tmp) / f"shared-{backend.value}").mkdir()
            for i, (backend, scheme) in enumerate(plan):
                vid = variant_id(backend, chosen[backend].label(scheme), suffix)
                workdir = Path(tmp) / vid  # a path of its own: no runtime may mistake it for the last one
                workdir.mkdir()
                report(Progress("export", vid, i, len(plan)))
                request = ExportRequest(
                    export_source,
                    scheme,
                    workdir,
                    options.calibration,
                    options.min_delegated,
                    options.calibration_method,
                    shared=Path(tmp) / f"shared-{backend.value}",
                    context=options.context,
                )
                stage = "export"
                try:
                    result = chosen[backend].export(request)
                    exported = Exported(vid, backend, scheme, result, workdir)
                    if screen is not None and not screen(exported, reference.golden.inputs):
                        shutil.rmtree(workdir, ignore_errors=True)
                        continue
                    report(Progress("verify", vid, i, len(plan)))
                    stage = "verify"
                    verdict = reference.measure(exported)
                    failed = verdict.accuracy is not None and not verdict.accuracy.passed
                    if failed and options.max_accuracy_drop is not None:
                        # The user gave a bound: keep the most sensitive layers float until the variant meets it.
                        from converters.mixed_precision import Trial, keep_sensitive_layers_float

                        trial = keep_sensitive_layers_float(
                            chosen[backend], request, reference, Trial((), result, verdict),
                            variant_id=vid, backend=backend, progress=report, position=(i, len(plan)),
                        )  # fmt: skip
                        result, verdict = trial.result, trial.verdict
                    if pruned_options:
                        recorded = {**result.recipe.options, **pruned_options}
                        result.recipe = result.recipe.model_copy(
                            update={"pruning_ratio": options.prune, "options": recorded}
                        )
                except EdgeSDKError as exc:
                    if not options.allow_failed:
                        raise
                    # Kept apart from the variants: the bundle says what is missing and why; the others stay.
                    failure = FailedVariant(id=vid, backend=backend, quantization=scheme, stage=stage, error=str(exc))
                    writer.add_failed(failure)
                    added(Added(None, writer.root, reference.golden.inputs, failure))
                    shutil.rmtree(workdir, ignore_errors=True)
                    continue
                # No accuracy (None): nothing to measure against, as for a file bundled as it is.
                if verdict.accuracy is not None and not verdict.accuracy.passed and not options.allow_failed:
                    raise AccuracyGateError(judge.refusal(vid, verdict.accuracy))
                facts = ModelFacts.of_files(backend, scheme, list(result.files.values()), result.inputs, result.outputs)
                variant = writer.add_variant(
                    variant_id=vid,
                    backend=backend,
                    files=result.files,
                    inputs=result.inputs,
                    outputs=result.outputs,
                    recipe=result.recipe,
                    runtime=result.runtime,
                    accuracy=verdict.accuracy,
                    fit={p.id: check_fit(p, facts) for p in options.profiles},
                    golden_outputs=verdict.golden_outputs,
                )
                shutil.rmtree(workdir)  # the bundle writer has its copy; keep the disk free for the next one
                added(Added(variant, writer.root, reference.golden.inputs))
        report(Progress("write", None, len(plan), len(plan), str(output)))
        return writer.write(output, overwrite=overwrite)
    finally:
        writer.discard()


def _carry_preprocessing(source: ModelSource, writer: BundleWriter) -> None:
    """What a device needs besides the variants to take user input: a tokenizer, the class names."""
    pre = source.preprocessing()
    if pre is not None:
        writer.set_preprocessing(pre.kind, pre.files, max_length=pre.max_length, pooling=pre.pooling)
    if source.labels:
        writer.set_labels(source.labels)


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
