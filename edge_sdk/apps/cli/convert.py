"""`edge-sdk convert`: a model in, a verified bundle out, with what was measured shown."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from edge_sdk.apps.cli.common import complete_profile, console, load_npz, parse_share, read_chat_template, user_errors
from edge_sdk.apps.cli.tables import variant_table
from edge_sdk.enums import Backend, QuantScheme, Task, parse_shape  # the enums alone: no pydantic, no numpy
from edge_sdk.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np

BACKENDS = ", ".join(b.value for b in Backend)
SCHEMES = ", ".join(q.value for q in QuantScheme)
TASKS = ", ".join(t.value for t in Task if t is not Task.TEXT_GENERATION)


# What --auto decides itself (the plan) or does not use: given with --auto they would be ignored, so refuse.
_AUTO_DECIDES = (
    "backend",
    "batch_axis",
    "static_input",
    "task",
    "quantize",
    "prune",
    "sparsity",
    "train",
    "calibration",
    "calibration_method",
    "eval_set",
    "input_shape",
    "example",
    "context",
)
_PLAN_DECIDES = ("profile", "objective", "max_accuracy_drop")


def convert_cmd(
    ctx: typer.Context,
    model: str = typer.Argument(
        ...,
        help="What to convert: a Hugging Face model directory (a text encoder: BERT, RoBERTa, DistilBERT...; or "
        "a causal LM for gguf), 'path/to/file.py:factory' (a function returning a torch.nn.Module), an existing "
        ".onnx file (to quantize), .gguf file, or .tflite file (to wrap), or 'zoo:digits-cnn' / 'zoo:smollm2'.",
    ),
    backend: str | None = typer.Option(
        None,
        "--backend",
        "-b",
        help=f"Engine(s), comma-separated: {BACKENDS}. Default: by the model (onnx; gguf for a language model; "
        "tflite for a .tflite). A LLaMA-family language model also takes executorch (-q f32, int8-dynamic, "
        "8da4w) and onnx (onnxruntime-genai: -q f32, int4), e.g. -b gguf,executorch,onnx -q q4_k_m,8da4w,int4.",
    ),
    task: str | None = typer.Option(
        None,
        "--task",
        help=f"What the outputs mean, which decides the metrics: {TASKS}. Default: from the model's config, "
        "else tensor.",
    ),
    quantize: str = typer.Option(
        "none",
        "--quantize",
        "-q",
        help=f"Quantization(s), comma-separated; each makes one variant per backend: {SCHEMES}. "
        "With --backend gguf and a .gguf: 'as-is' bundles the file unchanged (any architecture llama.cpp loads); "
        "a type re-quantizes it (any architecture llama.cpp knows; the loss is measured against the file).",
    ),
    profile: list[str] = typer.Option(
        [],
        "--profile",
        "-p",
        help="Device profile id (see `edge-sdk profiles list`) or a YAML file; repeatable.",
        autocompletion=complete_profile,
    ),
    output: Path = typer.Option(..., "--output", "-o", help="Directory to write the bundle to."),
    input_shape: str | None = typer.Option(
        None, "--input-shape", help="Shape of the one input, e.g. 1x1x8x8 (seeded random example data)."
    ),
    example: Path | None = typer.Option(None, "--example", help=".npz of example inputs, one array per input name."),
    batch_axis: list[str] = typer.Option(
        [],
        "--batch-axis",
        help="NAME=AXIS: the axis of an .onnx input that holds samples, where its symbolic dims do not say "
        "(e.g. state=1 for a [2, batch, H] state); repeatable.",
    ),
    static_input: list[str] = typer.Option(
        [],
        "--static-input",
        help="An .onnx input that is not batched (a scalar, a fixed side input): passed whole, never sliced; "
        "repeatable.",
    ),
    calibration: Path | None = typer.Option(
        None,
        "--calibration",
        help=".npz of calibration inputs for int8-static (default: the example inputs). For a language model "
        "(-b gguf) a UTF-8 text file: an importance matrix (as llama-imatrix computes it) from it weights the "
        "quantization of types below 8 bits (q6_k..q2_k, q5_*, q4_*; not q8_0 or float). Default: none.",
    ),
    calibration_method: str | None = typer.Option(
        None,
        "--calibration-method",
        help="How int8-static sets activation ranges: minmax, entropy or percentile "
        "(default per model kind: percentile for transformers, minmax otherwise).",
    ),
    eval_set: Path | None = typer.Option(
        None,
        "--eval",
        help=".npz of evaluation inputs; an array named 'labels' adds the accuracy metric. Default: the examples.",
    ),
    name: str | None = typer.Option(None, "--name", help="Bundle name (default: from the model)."),
    version: str = typer.Option("1.0.0", "--version", help="Bundle version, MAJOR.MINOR.PATCH."),
    max_accuracy_drop: str | None = typer.Option(
        None,
        "--max-accuracy-drop",
        help="Allowed absolute drop of accuracy/top-1 agreement, 1% or 0.01 (default per scheme). With int8, a "
        "variant that misses it keeps its most sensitive layers in float until it meets it (named in the recipe).",
    ),
    allow_failed: bool = typer.Option(
        False, "--allow-failed", help="Keep variants outside tolerance (marked failed) instead of refusing."
    ),
    min_delegated: str | None = typer.Option(
        None,
        "--min-delegated",
        help="ExecuTorch: fail unless at least this share of compute runs in the XNNPACK delegate: 90% or 0.9.",
    ),
    prune: float = typer.Option(
        0.0,
        "--prune",
        min=0.0,
        max=0.9,
        help="Remove this share of channels / features (torch-pruning), then recover by distillation from the "
        "unpruned model on --train (default: the model's own train_data()). Smaller and faster everywhere.",
    ),
    sparsity: float = typer.Option(
        0.0,
        "--sparsity",
        min=0.0,
        max=0.9,
        help="Zero this share of weights (unstructured). Recorded honestly: the engines store and run it dense.",
    ),
    train: Path | None = typer.Option(
        None, "--train", help=".npz of training inputs for recovery after --prune; an array 'labels' adds labels."
    ),
    auto: bool = typer.Option(
        False, "--auto", help="Plan for the one --profile (see `edge-sdk plan`) and convert the top entry."
    ),
    objective: str = typer.Option("latency", "--objective", help="With --auto: rank by latency, size or accuracy."),
    plan_file: Path | None = typer.Option(
        None, "--plan", help="With --auto: take the top entry of this plan file (from `edge-sdk plan --output`)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing bundle at --output."),
    chat_template: Path | None = typer.Option(
        None, "--chat-template", help="Jinja chat template file for a language model, stored in the bundle."
    ),
    tensor_type: list[str] = typer.Option(
        [],
        "--tensor-type",
        help="GGUF: PATTERN=TYPE[,...] gives the weights PATTERN names (GGUF name without .weight, any block: "
        "output, token_embd, ffn_down, 'blk\\.0\\..*') another type (f16, q8_0, q6_k...), e.g. output=q8_0.",
    ),
    context: int | None = typer.Option(
        None,
        "--context",
        help="Language models on executorch / onnx: tokens of prompt + generation their KV cache holds "
        "(default: the model's trained context, at most 2048).",
    ),
) -> None:
    """Convert a model into a bundle: export, quantize, run and measure each variant, check fit, write."""
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    import edge_sdk
    from converters.progress import Progress as Step

    with user_errors():
        drop = parse_share(max_accuracy_drop) if max_accuracy_drop is not None else None
        delegated = parse_share(min_delegated, "--min-delegated") if min_delegated is not None else None
    if auto:
        from edge_sdk.apps.cli.plan_cmd import convert_auto

        with user_errors():
            _refuse_ignored(
                ctx, _AUTO_DECIDES + (_PLAN_DECIDES if plan_file else ()), "--plan" if plan_file else "--auto"
            )
            convert_auto(model, profile, output, objective, drop, overwrite, plan_file)
        return
    with user_errors():
        template = read_chat_template(chat_template) if chat_template is not None else None
        _note_requantization(model, backend, quantize)
        examples = _examples(input_shape, example)
        labels = None
        eval_inputs = None
        if eval_set is not None:
            eval_inputs = load_npz(eval_set, "evaluation")
            labels = eval_inputs.pop("labels", None)
        train_data = None
        if train is not None:
            train_inputs = load_npz(train, "training")
            train_data = (train_inputs, train_inputs.pop("labels", None))
        with Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as bar:
            bar_task = bar.add_task("preparing", total=None)

            def show(step: Step) -> None:
                label = f"{step.step} {step.variant}" if step.variant else step.step
                bar.update(
                    bar_task, description=f"{label} {step.detail}".strip(), completed=step.done, total=step.total
                )

            bundle = edge_sdk.convert(
                model,
                examples,
                backend=backend,
                quantize=quantize,
                task=task,
                batch_axes=_batch_axes(batch_axis),
                static_inputs=[n.strip() for item in static_input for n in item.split(",") if n.strip()],
                profile=profile or None,
                output=output,
                name=name,
                version=version,
                calibration=_calibration(calibration) if calibration else None,
                calibration_method=calibration_method,
                eval_data=(eval_inputs, labels) if eval_inputs is not None else None,
                max_accuracy_drop=drop,
                allow_failed=allow_failed,
                min_delegated=delegated,
                prune=prune,
                sparsity=sparsity,
                train_data=train_data,
                overwrite=overwrite,
                progress=show,
                chat_template=template,
                tensor_types=[item for text in tensor_type for item in text.split(",") if item.strip()] or None,
                context=context,
            )
    console.print(variant_table(bundle))
    console.print(f"[green]wrote[/] {bundle.root} ({bundle.name} {bundle.manifest.version})")


def _calibration(path: Path) -> dict[str, np.ndarray] | str:
    """An .npz of inputs (a tensor model), else a text file (a language model's importance matrix)."""
    if path.suffix.lower() == ".npz":
        return load_npz(path, "calibration")
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--calibration {str(path)!r}: give an .npz of inputs or a UTF-8 text file ({exc})") from None


def _batch_axes(items: list[str]) -> dict[str, int]:
    axes = {}
    for item in (part for text in items for part in text.split(",") if part.strip()):
        name, sep, axis = item.partition("=")
        if not sep or not name.strip() or not axis.strip().isdigit():
            raise ConfigError(f"--batch-axis {item!r}: write NAME=AXIS, e.g. state=1")
        axes[name.strip()] = int(axis)
    return axes


def _examples(input_shape: str | None, example: Path | None) -> dict[str, np.ndarray] | None:
    if input_shape and example:
        raise ConfigError("give either --input-shape or --example, not both")
    if example:
        return load_npz(example, "example")
    if input_shape:
        import numpy as np

        rng = np.random.default_rng(0)
        # 64 samples of the given shape, so static int8 has something to calibrate on.
        shape = parse_shape(input_shape)
        return {"input": rng.standard_normal((64 * shape[0], *shape[1:])).astype(np.float32)}
    return None


def _refuse_ignored(ctx: typer.Context, names: tuple[str, ...], decided_by: str) -> None:
    """Options the user typed that `decided_by` would silently override: say so instead. (By the source's name:
    typer ships its own copy of click, so click's enum is not the one it returns.)"""
    given = [
        max(p.opts, key=len)
        for p in ctx.command.params
        if p.name in names and getattr(ctx.get_parameter_source(p.name), "name", "") == "COMMANDLINE"
    ]
    if given:
        raise ConfigError(
            f"{decided_by} chooses these itself; leave out {', '.join(given)} (or convert without --auto)"
        )


def _note_requantization(model: str, backend: str | None, quantize: str) -> None:
    """Say so when the GGUF being converted is already quantized (SmolLM2's packaged file is Q4_1)."""
    # No --backend: a .gguf or zoo:smollm2 becomes gguf by default (converters.resolve).
    if (backend is not None and "gguf" not in backend.lower()) or quantize.strip().lower() == "as-is":
        return
    if model != "zoo:smollm2" and not model.endswith(".gguf"):
        return
    from converters.gguf.gguf_source import requantize_note
    from converters.gguf.resolve import gguf_path_of

    note = requantize_note(gguf_path_of(model))
    if note:
        console.print(f"[yellow]warning:[/] {note}", highlight=False)
