"""`edge-sdk plan`: which backend × quantization × pruning (× context) to ship to a device, ranked."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from edge_sdk.apps.cli.common import console, err_console, human_bytes, user_errors
from edge_sdk.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np
    from rich.table import Table

    from converters.plan import Plan, PlanRequest
    from converters.progress import Progress as Step


def parse_share(text: str) -> float:
    """'1%' -> 0.01, '0.01' -> 0.01."""
    raw = text.strip()
    try:
        return float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise ConfigError(f"bad accuracy drop {text!r}; write it as 1% or 0.01") from None


def plan_cmd(
    model: str | None = typer.Argument(
        None, help="'zoo:digits-cnn', 'file.py:factory', a .onnx, or for LLMs 'zoo:smollm2', a .gguf, a HF directory."
    ),
    profile: str | None = typer.Option(None, "--profile", "-p", help="Device profile id or YAML file."),
    objective: str = typer.Option("latency", "--objective", help="Rank by: latency, size or accuracy."),
    max_accuracy_drop: str = typer.Option(
        "1%", "--max-accuracy-drop", help="Largest allowed drop of accuracy (LLMs: of top-1 agreement), e.g. 1%."
    ),
    backend: str | None = typer.Option(None, "--backend", "-b", help="Backends to try (default: onnx,executorch)."),
    quantize: str | None = typer.Option(None, "--quantize", "-q", help="Quantizations to try (default: all)."),
    prune: str | None = typer.Option(None, "--prune", help="Pruning ratios to try (default: 0,0.25,0.5)."),
    context: str | None = typer.Option(None, "--context", help="LLM context lengths (default: 512,1024,2048,4096)."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the plan here (it can be made again)."),
    from_json: Path | None = typer.Option(None, "--from", help="Make the plan of this plan file again."),
    workdir: Path | None = typer.Option(None, "--workdir", help="Keep the candidate bundles here."),
    eval_set: Path | None = typer.Option(
        None,
        "--eval",
        help=".npz of evaluation inputs the candidates are judged on; an array 'labels' adds accuracy. "
        "Default: the model's own eval_data(), else its example inputs.",
    ),
    calibration: Path | None = typer.Option(
        None, "--calibration", help=".npz of calibration inputs for int8-static (default: the example inputs)."
    ),
) -> None:
    """Enumerate backend × quantization × pruning ratio (× context length for LLMs), drop what cannot fit the
    profile, convert and measure the accuracy of what can, and print a ranked table. Exits 1 if none qualifies."""
    from edge_sdk.apps.cli.common import load_npz
    from edge_sdk.planning import load_plan, make_request

    with user_errors():
        evaluation = None
        if eval_set is not None:
            eval_inputs = load_npz(eval_set, "evaluation")
            evaluation = (eval_inputs, eval_inputs.pop("labels", None))
        calibration_data = load_npz(calibration, "calibration") if calibration is not None else None
        if from_json is not None:
            request = load_plan(from_json).request
        elif model is None or profile is None:
            raise ConfigError("give MODEL and --profile, or --from plan.json")
        else:
            request = make_request(
                model, profile, objective=objective, max_accuracy_drop=parse_share(max_accuracy_drop),
                backends=backend, quantize=quantize, prune=prune, contexts=context,
            )  # fmt: skip
        count = len(request.backends) * len(request.quantizations) * len(request.prune) * max(1, len(request.contexts))
        console.print(f"planning {count} candidate{'s' * (count != 1)} for {request.model} on {request.profile}")
        result = run_with_progress(request, workdir, evaluation, calibration_data)
    show_plan(result, json_out)
    if not result.ranked():
        with user_errors():
            result.best()  # raises with every candidate's reason


def run_with_progress(
    request: PlanRequest,
    workdir: Path | None,
    eval_data: tuple[dict[str, np.ndarray], np.ndarray | None] | None = None,
    calibration: dict[str, np.ndarray] | None = None,
) -> Plan:
    """The plan with a progress bar; the ETA comes from the candidates done so far."""
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from edge_sdk.planning import run_plan

    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), TextColumn("ETA"),
        TimeRemainingColumn(), console=console, transient=True,
    ) as bar:  # fmt: skip
        task = bar.add_task("planning", total=None)

        def show(step: Step) -> None:
            bar.update(task, description=step.text(), completed=step.done, total=step.total or None)

        return run_plan(request, workdir=workdir, eval_data=eval_data, calibration=calibration, progress=show)


def show_plan(result: Plan, json_out: Path | None) -> None:
    console.print(plan_table(result))
    if json_out is not None:
        json_out.write_text(result.model_dump_json(indent=2), encoding="utf-8")
        console.print(f"[green]wrote[/] {json_out}")


def plan_table(result: Plan) -> Table:
    from rich.markup import escape
    from rich.table import Table

    r = result.request
    table = Table(
        title=f"plan for {r.model} on {r.profile}: by {r.objective.value}, accuracy drop ≤ {r.max_accuracy_drop:.2%}"
    )
    for col in ("rank", "candidate", "size", "peak memory", "speed", "accuracy", "why not"):
        table.add_column(col)
    order = sorted(result.candidates, key=lambda c: (c.rank is None, c.rank or 0, c.status, c.id))
    for c in order:
        speed = (
            f"{c.tokens_per_second:.1f} tok/s"
            if c.tokens_per_second
            else f"{c.latency_ms:.3g} ms"
            if c.latency_ms
            else "-"
        )
        acc = f"{c.accuracy:.4f} (-{c.accuracy_drop:.2%})" if c.accuracy is not None else "-"
        why = "; ".join(c.reasons) if c.status != "ranked" else ""
        style = "" if c.rank else "dim"
        table.add_row(
            str(c.rank or "-"), c.id, human_bytes(c.size_bytes) if c.size_bytes else "-",
            human_bytes(c.peak_bytes) if c.peak_bytes else "-", speed, acc, escape(why[:160]), style=style,
        )  # fmt: skip
    return table


def convert_auto(
    model: str,
    profile: list[str],
    output: Path,
    objective: str,
    max_accuracy_drop: float | None,
    overwrite: bool,
    plan_file: Path | None = None,
) -> None:
    """`convert --auto`: plan (or read a plan made before), show the table, convert the top entry."""
    from edge_sdk.apps.cli.tables import variant_table
    from edge_sdk.planning import convert_best, load_plan, make_request

    if plan_file is not None:
        result = load_plan(plan_file)
        if result.request.model != model:
            raise ConfigError(f"{plan_file} is a plan for {result.request.model!r}, not for {model!r}")
        console.print(plan_table(result))
    else:
        if len(profile) != 1:
            raise ConfigError("--auto plans for one device: give exactly one --profile")
        drop = 0.01 if max_accuracy_drop is None else max_accuracy_drop
        request = make_request(model, profile[0], objective=objective, max_accuracy_drop=drop)
        result = run_with_progress(request, None)
        show_plan(result, output.with_name(output.name + ".plan.json"))
    best = result.best()
    err_console.print(f"converting the top entry: {best.id}")
    bundle = convert_best(result, output, overwrite=overwrite)
    console.print(variant_table(bundle))
    console.print(f"[green]wrote[/] {bundle.root} ({bundle.name} {bundle.manifest.version})")
