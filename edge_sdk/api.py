"""The public facade: thin functions over converters, runtimes and bundles."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_sdk import registry
from edge_sdk.bundle import AccuracyReport, Bundle
from edge_sdk.errors import BundleError, ConfigError, EdgeSDKError, StoreError
from edge_sdk.types import Backend, CalibrationMethod, QuantScheme, Task, parse_enum

if TYPE_CHECKING:
    from converters.progress import ProgressCallback
    from converters.sources import ModelSource
    from edge_sdk.store import InstalledModel
    from runtimes import Session


def _as_list(value: str | Any | Sequence[Any]) -> list[Any]:
    if isinstance(value, str):
        return [v for v in value.split(",") if v.strip()]
    if isinstance(value, Sequence):
        return list(value)
    return [value]


def resolve_source(
    model: Any,
    example_inputs: Mapping[str, np.ndarray] | np.ndarray | None,
    *,
    batch_axes: Mapping[str, int] | None = None,
    static_inputs: Sequence[str] = (),
) -> ModelSource:
    """A torch module, a Hugging Face encoder directory, an .onnx/.tflite path, 'file.py:factory' or
    'zoo:digits-cnn' -> a ModelSource (converters.resolve decides what the argument is)."""
    from converters.resolve import resolve_tensor_source

    examples = {"input": example_inputs} if isinstance(example_inputs, np.ndarray) else example_inputs
    return resolve_tensor_source(model, examples, batch_axes=batch_axes, static_inputs=static_inputs)


def convert(
    model: Any,
    example_inputs: Mapping[str, np.ndarray] | np.ndarray | None = None,
    *,
    backend: str | Backend | Sequence[str | Backend] | None = None,
    quantize: str | QuantScheme | Sequence[str | QuantScheme] = "none",
    profile: str | Path | Sequence[str | Path] | None = None,
    output: str | Path | None = None,
    name: str | None = None,
    version: str = "1.0.0",
    task: str | Task | None = None,
    batch_axes: Mapping[str, int] | None = None,
    static_inputs: Sequence[str] = (),
    calibration: Mapping[str, np.ndarray] | str | None = None,
    calibration_method: str | CalibrationMethod | None = None,
    eval_data: tuple[Mapping[str, np.ndarray], np.ndarray | None] | None = None,
    max_accuracy_drop: float | None = None,
    allow_failed: bool = False,
    min_delegated: float | None = None,
    prune: float = 0.0,
    sparsity: float = 0.0,
    train_data: tuple[Mapping[str, np.ndarray], np.ndarray | None] | None = None,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    chat_template: str | None = None,
    tensor_types: str | Sequence[str] | None = None,
    context: int | None = None,
) -> Bundle:
    """Convert a model into a verified bundle: one variant per backend × quantization.

    `backend` defaults to what the model is (converters.resolve: a Hugging Face encoder, an .onnx or a torch model
    -> onnx; a language model -> gguf; a .tflite -> tflite); `task` to what the model says (a Hugging Face config),
    else `tensor`. `batch_axes` (input -> axis) and `static_inputs` (never sliced) say which axis of an .onnx
    model's input holds samples where its symbolic dims do not. `output` defaults to a new temporary directory.
    `eval_data` is (inputs, labels or None);
    without it the model's own `eval_data()` is used if it has one, else the example inputs (then no task
    accuracy is measured) — or, for a model file that came without example inputs, the calibration inputs.
    `prune` removes that share of channels (torch-pruning) and recovers by distillation on `train_data` (default:
    the model's own `train_data()`); `sparsity` zeroes that share of weights and records that it buys nothing.
    int8 follows a recipe for the model's kind (transformers: only MatMul/Gemm quantized); `calibration_method`
    (minmax, entropy, percentile) overrides its default for static int8. With `max_accuracy_drop`, an int8
    variant that misses the bound keeps its most sensitive layers in float until it meets it (named in the recipe).
    `tensor_types` (GGUF only): 'output=q8_0,token_embd=f16' gives those tensors other types (see convert_llm).
    For a language model `calibration` is text: GGUF variants are quantized with its importance matrix.

    Example:
        >>> bundle = edge_sdk.convert("zoo:digits-cnn", backend="onnx", quantize=["none", "int8-static"],
        ...                           profile="rpi4", output="digits.bundle")
        >>> bundle.variants[1]
        Variant('onnx-int8-static', onnx, int8-static, 0.05 MiB, gate passed, rpi4: fits)
    """
    from converters.pipeline import ConvertOptions
    from converters.pipeline import convert as run_pipeline
    from device_profiles import load_profile

    if backend is None:
        from converters.resolve import default_backend

        backend = default_backend(model)
    backends = [parse_enum(Backend, b, "backend") for b in _as_list(backend)]
    if _is_language_model(model, backends):  # judged on text: convert_llm resolves and converts it
        kind = registry.SourceKind.LANGUAGE_MODEL
        if others := [b.value for b in backends if kind not in registry.entry(b).converts]:
            raise ConfigError(
                f"{', '.join(others)} cannot take a language model; backends that do: "
                f"{', '.join(b.value for b in registry.converting(kind))}"
            )
        if prune or sparsity:  # a language model is made smaller by quantization: refuse rather than ignore them
            raise ConfigError(
                "pruning and sparsity apply to tensor models; language-model variants are made smaller by "
                "quantization (e.g. q4_k_m, 8da4w, int4)"
            )
        if calibration is not None and not isinstance(calibration, str):
            raise ConfigError("a language model calibrates on text: give the calibration as a UTF-8 text file")
        return convert_llm(
            model,
            quantize=quantize,
            profile=profile,
            output=output,
            name=name,
            version=version,
            allow_failed=allow_failed,
            overwrite=overwrite,
            progress=progress,
            chat_template=chat_template,
            tensor_types=tensor_types,
            max_accuracy_drop=max_accuracy_drop,
            backend=backends,
            context=context,
            calibration_text=calibration,
        )
    if isinstance(calibration, str):
        raise ConfigError("calibration text is for language models; a tensor model calibrates on an .npz of inputs")
    if tensor_types:
        raise ConfigError("--tensor-type sets GGUF tensor types; for other backends use --max-accuracy-drop")
    if chat_template is not None:
        raise ConfigError("a chat template belongs to a language model (--backend gguf), not to a tensor model")
    schemes = [parse_enum(QuantScheme, q, "quantization") for q in _as_list(quantize)]
    profiles = tuple(load_profile(p) for p in _as_list(profile)) if profile is not None else ()
    source = resolve_source(model, example_inputs, batch_axes=batch_axes, static_inputs=static_inputs)
    if eval_data is None:
        from converters.sources import eval_data_of

        eval_data = eval_data_of(getattr(source, "module", None))
    if eval_data is None and calibration is not None and getattr(source, "examples_are_stand_ins", False):
        # The model came without data and its examples are seeded noise: judge it on the real samples given
        # for calibration, not on noise that no calibration represents.
        eval_data = (calibration, None)
    eval_inputs, eval_labels = (dict(eval_data[0]), eval_data[1]) if eval_data else (None, None)
    train = None
    if prune:
        from converters.prune import TrainData, check_ratio
        from converters.sources import eval_data_of

        check_ratio(prune)
        train_data = train_data or eval_data_of(getattr(source, "module", None), "train_data")
        train = TrainData(dict(train_data[0]), train_data[1]) if train_data else None
    options = ConvertOptions(
        name=name or _default_name(source.describe()),
        version=version,
        task=parse_enum(Task, task, "task") if task is not None else source.task,
        profiles=profiles,
        calibration=dict(calibration) if calibration is not None else None,
        eval_inputs=eval_inputs,
        eval_labels=eval_labels,
        max_accuracy_drop=max_accuracy_drop,
        calibration_method=(
            parse_enum(CalibrationMethod, calibration_method, "calibration method") if calibration_method else None
        ),
        allow_failed=allow_failed,
        min_delegated=min_delegated,
        prune=prune,
        sparsity=sparsity,
        train=train,
    )
    dest = Path(output) if output is not None else Path(tempfile.mkdtemp(prefix="edge-bundle-")) / options.name
    return run_pipeline(source, backends, schemes, dest, options, overwrite=overwrite, progress=progress)


def _default_name(description: str) -> str:
    stem = Path(description.split(":")[-1] if description.startswith("zoo:") else description).stem
    cleaned = "".join(c if c.isalnum() else "-" for c in stem.lower()).strip("-")
    return cleaned or "model"


def open_bundle(bundle: str | Path | Bundle) -> Bundle:
    """Open and fully verify a bundle (directory or .edgebundle): digests, sizes, schema, no unknown files.

    Example:
        >>> edge_sdk.open_bundle("digits.bundle")
        <Bundle digits-cnn 1.0.0 (classification) at 'digits.bundle': variants onnx-fp32, onnx-int8-static>
    """
    return bundle if isinstance(bundle, Bundle) else Bundle.open(bundle)


def load(
    bundle: str | Path | Bundle,
    variant: str | None = None,
    *,
    threads: int | None = None,
    context: int | None = None,
) -> Session:
    """Load one variant of a bundle with its backend's runtime (the first variant unless named); a bundle that
    carries a tokenizer also takes text (`embed`, `classify`).
    `context`: a language model's context in tokens (None: the engine's default).

    Example:
        >>> with edge_sdk.load("digits.bundle", "onnx-int8-static") as session:
        ...     outputs = session.run({"input": images})  # {"logits": float32 array [n, 10]}
    """
    from runtimes import SessionOptions, get_runtime

    opened = open_bundle(bundle)
    chosen = opened.variant(variant)
    from runtimes.text import with_preprocessing

    options = SessionOptions(threads=threads, context=context)
    return with_preprocessing(get_runtime(chosen.backend).load(chosen, opened.root, options), opened)


def check_golden(bundle: str | Path | Bundle, variant: str | None = None) -> AccuracyReport:
    """Re-run the golden inputs here and compare with what the variant produced when it was converted.

    Example:
        >>> edge_sdk.check_golden("digits.bundle", "onnx-int8-static").passed
        True
    """
    from converters.verify import DEVICE_TOLERANCE, compare

    opened = open_bundle(bundle)
    chosen = opened.variant(variant)
    golden = opened.golden()
    expected = opened.golden_outputs(chosen)
    if golden is None or expected is None:
        raise BundleError(f"bundle {opened.name!r} variant {chosen.id!r} carries no golden set to check")
    with load(opened, chosen.id) as session:
        # A language model's golden set is tokens, and its outputs the logits at each position.
        outputs = session.run(golden.inputs) if chosen.inputs else {"logits": session.score(golden.inputs["tokens"])}
    return compare(
        expected,
        outputs,
        DEVICE_TOLERANCE,
        reference_name=f"{chosen.id} as measured at conversion",
        task=opened.manifest.task,
    )


def install(
    bundle: str | Path | Bundle,
    store: str | Path,
    *,
    activate: bool = True,
    check: bool = True,
    allow_failed: bool = False,
    allow_downgrade: bool = False,
    trust: Sequence[str | Path] | None = None,
    variant: str | None = None,
) -> InstalledModel:
    """Install a bundle into a device store as `edge-sdk install` does: verify it (and with `trust` its
    signature), re-run every variant's golden set here (`check`), add it as a new version and activate it
    atomically. A variant that failed its gate at conversion, or its golden set here, refuses the install
    (StoreError naming it) unless `allow_failed` (the first) or `check=False` (both)."""
    from edge_sdk.bundle.signing import load_trusted
    from edge_sdk.store import BundleStore

    source = bundle.root if isinstance(bundle, Bundle) else Path(bundle)
    keys = [load_trusted(Path(p)) for p in trust] if trust else None
    gate = (lambda b: _golden_gate(b, allow_failed=allow_failed)) if check else None
    return BundleStore(store).install(
        source, activate=activate, check=gate, allow_downgrade=allow_downgrade, trust=keys, variant=variant
    )


def _golden_gate(bundle: Bundle, *, allow_failed: bool) -> bool:
    from converters.verify import summary

    for v in bundle.variants:
        if v.accuracy is not None and not v.accuracy.passed:
            if allow_failed:
                continue
            raise StoreError(f"{bundle.name} variant {v.id} FAILED at conversion: {summary(v.accuracy)}")
        if v.golden_outputs is None or bundle.manifest.golden is None:
            continue  # a language model's quality was measured at conversion
        report = check_golden(bundle, v.id)
        if not report.passed:
            raise StoreError(f"{bundle.name} variant {v.id} fails its golden set here: {summary(report)}")
    return True


def _is_language_model(model: Any, backends: Sequence[Backend]) -> bool:
    """A backend that converts nothing else says so, or the model's path does (a decoder directory, a .gguf,
    'zoo:smollm2')."""
    if any(b in registry.converting_only(registry.SourceKind.LANGUAGE_MODEL) for b in backends):
        return True
    from converters.resolve import is_language_model

    try:
        return is_language_model(model)
    except EdgeSDKError:
        return False  # not a path it knows: the tensor path says what is wrong


def resolve_llm_source(model: Any) -> Any:
    """'zoo:smollm2', a .gguf path or a Hugging Face LLaMA directory -> an LLM source for convert_llm."""
    from converters.gguf.resolve import resolve_llm_source as resolve

    return resolve(model)


def convert_llm(
    source: Any,
    *,
    quantize: str | QuantScheme | Sequence[str | QuantScheme] = ("q8_0", "q4_0"),
    profile: str | Path | Sequence[str | Path] | None = None,
    output: str | Path | None = None,
    name: str | None = None,
    version: str = "1.0.0",
    eval_tokens: int = 256,
    tolerance_scale: float = 1.0,
    allow_failed: bool = False,
    threads: int | None = None,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    tokenizer: Any = None,
    chat_template: str | None = None,
    tensor_types: str | Sequence[str] | None = None,
    max_accuracy_drop: float | None = None,
    backend: str | Backend | Sequence[str | Backend] = Backend.GGUF,
    context: int | None = None,
    calibration_text: str | None = None,
) -> Bundle:
    """Convert a language model to a bundle of variants, each gated on KL divergence, top-1 and perplexity
    against the same reference (the model at float32 in llama.cpp). `backend`: gguf (default), executorch and/or
    onnx; `context`: the KV cache of ExecuTorch and ONNX GenAI variants (default: the model's, at most 2048).

    `source`: 'zoo:smollm2', a .gguf (re-quantized from its dequantized weights), a Hugging Face LLaMA
    directory, or a `transformers` model object together with its `tokenizer` (a transformers tokenizer or a
    `tokenizers.Tokenizer`). `quantize`: GGUF types such as f32, f16, q8_0, q4_0, q4_k_m. `tensor_types`:
    'PATTERN=TYPE,...' gives the weights a pattern names (their GGUF name without '.weight', in any block:
    'output', 'token_embd', 'ffn_down', 'blk\\.0\\..*') another tensor type (f16, q8_0, q6_k, ...), recorded in the
    recipe as read back from the file. `max_accuracy_drop` bounds 1 - top-1 agreement; a variant that misses it
    keeps its most sensitive layers at f16 until it meets it. `calibration_text`: GGUF weights are quantized with
    its importance matrix (as llama-imatrix computes it: mean x² of each input column over the text), which
    matters for the types below 8 bits (q6_k ... q2_k, q5_*, q4_*); the recipe records it and its token count.

    Example:
        >>> bundle = edge_sdk.convert_llm("zoo:smollm2", quantize=["q8_0", "q4_0"], profile="rpi4")
        >>> [v.id for v in bundle.variants]
        ['gguf-q8_0', 'gguf-q4_0']
    """
    if hasattr(source, "save_pretrained") and hasattr(source, "config"):
        import shutil

        # A model object in memory: save it as transformers would, then read it like any HF directory.
        if tokenizer is None:
            raise ConfigError("a transformers model object needs its tokenizer: convert_llm(model, tokenizer=tok)")
        workdir = Path(tempfile.mkdtemp(prefix="edge-llm-source-"))
        try:
            source.save_pretrained(workdir)
            if hasattr(tokenizer, "save_pretrained"):
                tokenizer.save_pretrained(workdir)
            else:
                tokenizer.save(str(workdir / "tokenizer.json"))
            return convert_llm(
                workdir, quantize=quantize, profile=profile, output=output,
                name=name or _default_name(type(source).__name__), version=version, eval_tokens=eval_tokens,
                tolerance_scale=tolerance_scale, allow_failed=allow_failed, threads=threads, overwrite=overwrite,
                progress=progress, chat_template=chat_template, tensor_types=tensor_types,
                max_accuracy_drop=max_accuracy_drop, backend=backend, context=context,
                calibration_text=calibration_text,
            )  # fmt: skip
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    from converters.gguf.as_is import wants_as_is
    from converters.llm_convert import bundle_as_is
    from converters.llm_convert import convert_llm as convert_language_model
    from device_profiles import load_profile

    profiles = tuple(load_profile(p) for p in _as_list(profile)) if profile is not None else ()
    from converters.gguf.writer import parse_tensor_types

    rules = parse_tensor_types(tensor_types)  # refused before any work
    if wants_as_is(quantize) and (rules or max_accuracy_drop is not None or calibration_text is not None):
        raise ConfigError(
            "-q as-is bundles the file unchanged: --tensor-type, --max-accuracy-drop and --calibration need a "
            "quantization"
        )
    if wants_as_is(quantize):  # any GGUF llama.cpp loads, unchanged: golden set and fit report only
        from converters.gguf.resolve import gguf_path_of

        path = gguf_path_of(source)
        bundle_name = name or _default_name(path.name)
        dest = Path(output) if output is not None else Path(tempfile.mkdtemp(prefix="edge-bundle-")) / bundle_name
        return bundle_as_is(path, dest, bundle_name, profiles, version=version, overwrite=overwrite,
                            threads=threads, chat_template=chat_template, progress=progress)  # fmt: skip
    llm_source = resolve_llm_source(source)
    if chat_template is not None:
        llm_source.chat_template = chat_template
    bundle_name = name or _default_name(llm_source.describe())
    dest = Path(output) if output is not None else Path(tempfile.mkdtemp(prefix="edge-bundle-")) / bundle_name
    return convert_language_model(
        llm_source,
        _as_list(quantize),
        dest,
        bundle_name,
        profiles,
        backends=[parse_enum(Backend, b, "backend") for b in _as_list(backend)],
        context=context,
        version=version,
        eval_tokens=eval_tokens,
        tolerance_scale=tolerance_scale,
        allow_failed=allow_failed,
        threads=threads,
        overwrite=overwrite,
        progress=progress,
        tensor_types=rules,
        max_accuracy_drop=max_accuracy_drop,
        calibration_text=calibration_text,
    )
