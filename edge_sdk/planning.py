"""plan() and convert_auto(): search backend × quantization × pruning (× context) for a device and objective."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_sdk import registry
from edge_sdk.bundle import Bundle
from edge_sdk.errors import ConfigError
from edge_sdk.types import Backend, QuantScheme, Task, parse_enum

if TYPE_CHECKING:
    from converters.plan import Candidate, Objective, Plan, PlanRequest
    from converters.progress import ProgressCallback

DEFAULT_PRUNE = (0.0, 0.25, 0.5)
TENSOR_QUANTIZATIONS = ("none", "fp16", "int8-dynamic", "int8-static")
LLM_QUANTIZATIONS = ("q8_0", "q4_k_m", "q4_0")
DEFAULT_CONTEXTS = (512, 1024, 2048, 4096)
Labelled = tuple[Mapping[str, np.ndarray], np.ndarray | None]


MODULE_PREFIX = "module:"  # a plan of a torch module in memory names it by its class: 'module:Net'


def _is_language_model(model: str) -> bool:
    from converters.resolve import is_language_model

    return not model.startswith(MODULE_PREFIX) and is_language_model(model)


def _no_channels_to_remove(model: str) -> bool:
    """A file, or a transformer whose channels torch-pruning cannot remove without retraining its attention
    (a torch module in memory has channels to remove)."""
    from converters.resolve import SourceType, source_type

    if model.startswith(MODULE_PREFIX):
        return False
    return source_type(model) in (SourceType.ONNX, SourceType.TFLITE, SourceType.HF_ENCODER)


def _list(value: str | Sequence[Any] | None) -> list[Any] | None:
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else list(value)


def _scheme(text: str | QuantScheme) -> QuantScheme:
    """A quantization by its name here or as llama.cpp users write it ('f16', 'Q8_0', 'q4-k-m')."""
    if isinstance(text, QuantScheme):
        return text
    name = str(text).strip().lower()
    name = "fp16" if name == "f16" else name
    known = {q.value for q in QuantScheme}
    return parse_enum(QuantScheme, name if name in known else name.replace("-", "_"), "quantization")


def make_request(
    model: str | Path,
    profile: str | Path,
    *,
    objective: str | Objective = "latency",
    max_accuracy_drop: float = 0.01,
    backends: str | Sequence[str | Backend] | None = None,
    quantize: str | Sequence[str | QuantScheme] | None = None,
    prune: str | Sequence[float] | None = None,
    contexts: str | Sequence[int] | None = None,
) -> PlanRequest:
    """Validate a plan request at the boundary: every value is checked and named when wrong."""
    from converters.plan import Objective, PlanRequest
    from device_profiles import load_profile

    load_profile(profile)  # an unknown profile is refused before any work
    if not 0.0 <= max_accuracy_drop <= 1.0:
        raise ConfigError(
            f"max accuracy drop must be a share between 0 and 1 (0.01 is 1%), got {max_accuracy_drop}: "
            "an objective that no variant can meet"
        )
    text = str(model)
    llm = _is_language_model(text)
    # each list once: a value given twice would be converted twice, then clash as one variant id
    chosen = list(dict.fromkeys(parse_enum(Backend, b, "backend") for b in _list(backends) or []))
    language = registry.converting_only(registry.SourceKind.LANGUAGE_MODEL)  # plans: llama.cpp's quantizations
    if not chosen:
        chosen = language[:1] if llm else [Backend.ONNX, Backend.EXECUTORCH]
    if llm != any(b in language for b in chosen) or (llm and len(chosen) != 1):
        raise ConfigError(
            f"{text} is {'a language model' if llm else 'a tensor model'}; plan it with "
            f"{'--backend ' + language[0].value if llm else 'tensor backends (onnx, executorch)'}"
        )
    schemes = list(dict.fromkeys(_scheme(q) for q in _list(quantize) or []))
    try:
        fixed = llm or _no_channels_to_remove(text)
        ratios = tuple(dict.fromkeys(float(r) for r in (_list(prune) or ([0.0] if fixed else DEFAULT_PRUNE))))
        ctxs = tuple(dict.fromkeys(int(c) for c in (_list(contexts) or (DEFAULT_CONTEXTS if llm else ()))))
    except ValueError as exc:
        raise ConfigError(f"pruning ratios are numbers like 0,0.25,0.5 and contexts integers: {exc}") from None
    if llm and any(ratios):
        raise ConfigError("pruning applies to tensor models; plan a language model with --prune 0")
    return PlanRequest(
        model=text,
        profile=str(profile),
        objective=parse_enum(Objective, objective, "objective"),
        max_accuracy_drop=max_accuracy_drop,
        backends=tuple(chosen),
        quantizations=tuple(schemes)
        or tuple(QuantScheme(q) for q in (LLM_QUANTIZATIONS if llm else TENSOR_QUANTIZATIONS)),
        prune=ratios,
        contexts=ctxs,
    )


def run_plan(
    request: PlanRequest,
    *,
    workdir: str | Path | None = None,
    eval_data: Labelled | None = None,
    train_data: Labelled | None = None,
    calibration: Mapping[str, np.ndarray] | None = None,
    progress: ProgressCallback | None = None,
    module: Any = None,
    example_inputs: Mapping[str, np.ndarray] | None = None,
    done: Sequence[Candidate] = (),
    save_to: str | Path | None = None,
) -> Plan:
    """Convert and measure every candidate of `request` that can fit; the result ranks them. The candidate
    bundles are kept in `workdir` when given, else made in a temporary directory removed afterwards.
    `module`: an in-memory torch module planned instead of loading `request.model` (then only its name).
    `done`: candidates measured before (a plan file's), taken as they are; `save_to`: a plan file rewritten after
    each decision, so an interrupted plan keeps what it measured (its `pending` lists what is left)."""
    if workdir is None:  # the plan holds no path into them: a default workdir would only fill /tmp
        with tempfile.TemporaryDirectory(prefix="edge-plan-") as tmp:
            return run_plan(
                request, workdir=tmp, eval_data=eval_data, train_data=train_data, calibration=calibration,
                progress=progress, module=module, example_inputs=example_inputs, done=done, save_to=save_to,
            )  # fmt: skip
    from converters.pipeline import ConvertOptions
    from converters.plan import plan_language_model, plan_tensor_model
    from converters.prune import TrainData
    from converters.sources import eval_data_of
    from device_profiles import load_profile
    from edge_sdk.api import _default_name, resolve_source

    profile = load_profile(request.profile)
    work = Path(workdir)
    checkpoint = None
    if save_to is not None:

        def checkpoint(partial: Plan, file: str | Path = save_to) -> None:
            save_plan(partial, file)

    if request.contexts:
        from edge_sdk.api import resolve_llm_source

        llm = resolve_llm_source(request.model)
        path = getattr(llm, "path", None)
        source_file = Path(path) if path is not None and Path(path).suffix == ".gguf" else None
        llm_options = ConvertOptions(name=_default_name(llm.describe()), task=Task.TEXT_GENERATION)
        return plan_language_model(
            llm, request, profile, llm_options, work, source_file=source_file, progress=progress, done=done,
            checkpoint=checkpoint,
        )  # fmt: skip
    source = resolve_source(module if module is not None else request.model, example_inputs)
    module = getattr(source, "module", None)
    evaluation = eval_data or eval_data_of(module)
    training = train_data or eval_data_of(module, "train_data")
    options = ConvertOptions(
        name=_default_name(source.describe()),
        task=Task.TENSOR,
        calibration=dict(calibration) if calibration is not None else None,
        eval_inputs=dict(evaluation[0]) if evaluation else None,
        eval_labels=evaluation[1] if evaluation else None,
        train=TrainData(dict(training[0]), training[1]) if training else None,
    )
    host = load_profile("host")
    return plan_tensor_model(
        source, request, profile, options, work, host=host, progress=progress, done=done, checkpoint=checkpoint
    )


def plan(
    model: Any,
    profile: str | Path,
    *,
    objective: str | Objective = "latency",
    max_accuracy_drop: float = 0.01,
    backends: str | Sequence[str | Backend] | None = None,
    quantize: str | Sequence[str | QuantScheme] | None = None,
    prune: str | Sequence[float] | None = None,
    contexts: str | Sequence[int] | None = None,
    eval_data: Labelled | None = None,
    calibration: Mapping[str, np.ndarray] | None = None,
    train_data: Labelled | None = None,
    example_inputs: Mapping[str, np.ndarray] | None = None,
    workdir: str | Path | None = None,
    progress: ProgressCallback | None = None,
    save_to: str | Path | None = None,
) -> Plan:
    """Rank backend × quantization × pruning (× context) for `profile` by `objective`.

    `model`: 'zoo:digits-cnn', 'file.py:factory', a .onnx, an LLM ('zoo:smollm2', a .gguf, a HF directory), or a
    torch module in memory (with `example_inputs`, or its own `example_inputs()`). Candidates are judged on
    `eval_data` (inputs, labels or None; default: the model's `eval_data()`), int8-static calibrates on
    `calibration`, recovery after pruning trains on `train_data` (default: the model's `train_data()`).

    Example:
        >>> result = edge_sdk.plan("zoo:digits-cnn", "rpi4", objective="size", backends="onnx")
        >>> result.best()
        Candidate('onnx-int8-static-pruned50', rank 1, 0.02 MiB, accuracy 0.9778)
    """
    in_memory = not isinstance(model, str | Path)
    name = f"{MODULE_PREFIX}{type(model).__name__}" if in_memory else model
    request = make_request(
        name, profile, objective=objective, max_accuracy_drop=max_accuracy_drop, backends=backends,
        quantize=quantize, prune=prune, contexts=contexts,
    )  # fmt: skip
    return run_plan(
        request, workdir=workdir, eval_data=eval_data, train_data=train_data, calibration=calibration,
        progress=progress, module=model if in_memory else None, example_inputs=example_inputs, save_to=save_to,
    )  # fmt: skip


def scratch_plan_file(request: PlanRequest) -> Path:
    """Where a plan run without a file of its own keeps its partial results (in the edge-sdk cache)."""
    from edge_sdk.fsutil import cache_dir

    name = f"{request.model}-{Path(request.profile).stem}"
    return cache_dir() / "plans" / ("".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in name) + ".json")


def save_plan(plan_: Plan, path: str | Path) -> Path:
    """Write the plan file whole or not at all (a Ctrl-C mid-write leaves the previous one)."""
    import os

    file = Path(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    partial = file.with_name(f".{file.name}.tmp")
    partial.write_text(plan_.model_dump_json(indent=2), encoding="utf-8")
    os.replace(partial, file)
    return file


def resume_plan(
    path: str | Path,
    *,
    workdir: str | Path | None = None,
    eval_data: Labelled | None = None,
    calibration: Mapping[str, np.ndarray] | None = None,
    progress: ProgressCallback | None = None,
    save_to: str | Path | None = None,
    module: Any = None,
) -> Plan:
    """The plan of a plan file again: its measured candidates replayed as recorded (nothing re-converted, the
    ranking the same), only those it lists as pending measured now. `save_to` defaults to the file itself.
    `module`: the torch module in memory a 'module:Name' plan was made of, to measure its pending candidates."""
    from converters.plan import rank

    before = load_plan(path)
    if before.complete:  # nothing left to measure: no source to load, no conversion, the recorded ranking
        replayed = before.model_copy(update={"candidates": rank(before.candidates, before.request.objective)})
        if save_to is not None:
            save_plan(replayed, save_to)
        return replayed
    if before.request.model.startswith(MODULE_PREFIX) and module is None:
        raise ConfigError(
            f"{str(path)!r} is a plan of a module in memory ({before.request.model}) with candidates still to "
            "measure: pass the module, edge_sdk.planning.resume_plan(path, module=model)"
        )
    return run_plan(
        before.request, workdir=workdir, eval_data=eval_data, calibration=calibration, progress=progress,
        done=before.candidates, save_to=path if save_to is None else save_to, module=module,
    )  # fmt: skip


def load_plan(path: str | Path) -> Plan:
    from pydantic import ValidationError

    from converters.plan import Plan

    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"plan file {str(file)!r} does not exist")
    try:
        return Plan.model_validate_json(file.read_text(encoding="utf-8"))
    except ValidationError as exc:
        raise ConfigError(f"{str(file)!r} is not a plan written by `edge-sdk plan --json`: {exc}") from None


def convert_best(plan_: Plan, output: str | Path, *, overwrite: bool = False) -> Bundle:
    """Convert the plan's top entry into a bundle, checked against the plan's profile and accuracy bound."""
    from edge_sdk.api import convert, convert_llm

    best, request = plan_.best(), plan_.request
    if request.model.startswith(MODULE_PREFIX):
        raise ConfigError(
            f"this plan is of a module in memory ({request.model}); convert its best entry with "
            f"edge_sdk.convert(module, backend={best.backend.value!r}, quantize={best.quantization.value!r}, "
            f"prune={best.prune})"
        )
    if request.contexts:
        return convert_llm(
            request.model, quantize=[best.quantization], profile=request.profile, output=output, overwrite=overwrite
        )
    return convert(
        request.model,
        backend=best.backend,
        quantize=best.quantization,
        prune=best.prune,
        profile=request.profile,
        output=output,
        max_accuracy_drop=request.max_accuracy_drop,
        overwrite=overwrite,
    )
