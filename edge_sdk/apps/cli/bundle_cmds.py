"""`edge-sdk inspect | verify | run | pack`: look into a bundle, check it, execute it, ship it."""

from __future__ import annotations

from pathlib import Path

import typer

from edge_sdk.apps.cli.common import EXIT_FAILED, console, err_console, human_bytes, load_npz, user_errors

BUNDLE_ARG = typer.Argument(..., help="A bundle directory or .edgebundle file.")


def inspect_cmd(
    bundle: Path = BUNDLE_ARG,
    as_json: bool = typer.Option(False, "--json", help="Print the manifest as JSON."),
) -> None:
    """Show what a bundle holds: variants, tensors, recipes, accuracy reports and fit per profile."""
    from rich.markup import escape
    from rich.table import Table

    from edge_sdk.apps.cli.tables import variant_table
    from edge_sdk.bundle import Bundle

    with user_errors():
        opened = Bundle.open(bundle)
    m = opened.manifest
    if as_json:
        typer.echo(m.model_dump_json(indent=2))
        return
    console.print(f"[bold]{m.name}[/] {m.version}  task={m.task.value}  schema={m.schema_version}  by {m.created_by}")
    console.print(f"source: {m.source.kind} {m.source.description} {m.source.digest[:23]}…")
    console.print(variant_table(opened))
    for v in m.variants:
        detail = Table(title=f"{v.id} ({v.backend.value}, needs {v.runtime.package} {v.runtime.version})")
        detail.add_column("item")
        detail.add_column("value")
        for spec in v.inputs:
            detail.add_row("input", escape(spec.describe()))
        for spec in v.outputs:
            detail.add_row("output", escape(spec.describe()))
        for f in v.files:
            detail.add_row("file", f"{f.path} {human_bytes(f.size)} sha256 {f.sha256[:12]}…")
        for key, value in v.recipe.options.items():
            detail.add_row(f"recipe.{key}", escape(value))
        if v.accuracy:
            for metric in v.accuracy.metrics:
                ref = f" ref {metric.reference:.4g}" if metric.reference is not None else ""
                verdict = "[green]ok[/]" if metric.passed else "[red]FAIL[/]"
                detail.add_row(metric.name, f"{metric.value:.5g}{ref} tol {metric.tolerance:.3g} {verdict}")
            if v.accuracy.measured_on:
                detail.add_row("measured on", escape(v.accuracy.measured_on))
        for report in v.fit.values():
            why = "; ".join(report.reasons) or "fits"
            detail.add_row(f"fit {report.profile}", escape(why))
        console.print(detail)


def verify_cmd(
    bundle: Path = BUNDLE_ARG,
    run: bool = typer.Option(
        False, "--run", help="Also run each variant on the golden set here and compare with the recorded outputs."
    ),
    allow_failed: bool = typer.Option(
        False, "--allow-failed", help="With --run: accept variants whose accuracy gate failed at conversion."
    ),
) -> None:
    """Verify digests, sizes, schema and file list (and with --run, the golden set). Exits 1 when invalid."""
    from edge_sdk.apps.cli.golden import check_golden_sets
    from edge_sdk.bundle import Bundle

    with user_errors():
        opened = Bundle.open(bundle)
        console.print(
            f"[green]ok[/] {opened.name} {opened.manifest.version}: {len(opened.manifest.all_files())} files "
            "match their digests"
        )
        if not run:
            return
        failed = not check_golden_sets(opened, allow_failed=allow_failed)
    if failed:
        err_console.print(
            "[bold red]error:[/] a variant failed its accuracy gate at conversion or does not reproduce its golden "
            "outputs on this machine"
        )
        raise typer.Exit(EXIT_FAILED)


def run_cmd(
    bundle: Path = BUNDLE_ARG,
    input_file: Path = typer.Option(..., "--input", "-i", help=".npz with one array per model input."),
    variant: str | None = typer.Option(None, "--variant", "-v", help="Variant id (default: the first)."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write the outputs to this .npz."),
    threads: int | None = typer.Option(None, "--threads", help="Engine threads (default: the engine's choice)."),
) -> None:
    """Run a bundle on inputs from an .npz and show (or save) the outputs."""
    import numpy as np
    from rich.markup import escape

    import edge_sdk
    from edge_sdk.types import Task

    with user_errors():
        inputs = load_npz(input_file, "input")
        opened = edge_sdk.open_bundle(bundle)
        with edge_sdk.load(opened, variant, threads=threads) as session:
            outputs = session.run(inputs)
    task, labels = opened.manifest.task, opened.manifest.labels
    for name, value in outputs.items():
        line = f"{name}: {value.dtype}[{'x'.join(map(str, value.shape))}]"
        if task is Task.CLASSIFICATION and value.ndim == 2 and value.shape[1] > 1:  # a decision only where it is one
            classes = value.argmax(axis=1).tolist()[:32]
            line += f" class {[labels[c] for c in classes] if len(labels) == value.shape[1] else classes}"
        flat = value.reshape(-1)
        shown = np.array2string(flat[:8], precision=4, separator=", ", suppress_small=True)
        line += f" values {shown[:-1]}{', …]' if flat.size > 8 else ']'}"
        console.print(escape(line), highlight=False)
    if output:
        np.savez(output, **outputs)  # type: ignore[arg-type]  # numpy's stub misreads **kwargs
        console.print(f"[green]wrote[/] {output}")


def pack_cmd(
    bundle: Path = BUNDLE_ARG,
    output: Path = typer.Option(..., "--output", "-o", help="The .edgebundle file to write."),
) -> None:
    """Pack a verified bundle directory into one reproducible .edgebundle file."""
    from edge_sdk.bundle import Bundle

    with user_errors():
        dest = Bundle.open(bundle).pack(output)
    console.print(f"[green]wrote[/] {dest} ({human_bytes(dest.stat().st_size)})")
