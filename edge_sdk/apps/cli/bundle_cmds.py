"""`edge-sdk inspect | verify | run | pack`: look into a bundle, check it, execute it, ship it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer
from rich.markup import escape
from rich.table import Table

from edge_sdk.apps.cli.common import (
    EXIT_FAILED,
    console,
    err_console,
    human_bytes,
    json_option,
    load_npz,
    print_json,
    user_errors,
    write_page,
)
from edge_sdk.apps.cli.convert import variant_table
from edge_sdk.apps.cli.golden import check_golden_sets
from edge_sdk.bundle import Bundle
from edge_sdk.types import Task

BUNDLE_ARG = typer.Argument(..., help="A bundle directory or .edgebundle file.")


def inspect_cmd(
    bundle: Path = BUNDLE_ARG,
    as_json: bool = typer.Option(False, "--json", help="Print the manifest as JSON."),
    html_out: Path | None = typer.Option(
        None, "--html", help="Write an HTML page here: variants, accuracy and the memory breakdown (opens offline)."
    ),
) -> None:
    """Show what a bundle holds: variants, tensors, recipes, accuracy reports and fit per profile."""
    with user_errors():
        opened = Bundle.open(bundle)
        if html_out is not None:
            from edge_sdk.apps.pages.bundle_report import bundle_report

            write_page(html_out, bundle_report(opened))
            if not as_json:
                return
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
    as_json: bool = json_option(),
) -> None:
    """Verify digests, sizes, schema and file list (and with --run, the golden set). Exits 1 when invalid."""
    if as_json:
        _verify_json(bundle, run, allow_failed)
        return
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


def _verify_json(bundle: Path, run: bool, allow_failed: bool) -> None:
    """{bundle, valid, name, version, files, error, golden: null | [{variant, result, detail, samples, passed}]}."""
    from edge_sdk.apps.cli.golden import golden_results
    from edge_sdk.errors import EdgeSDKError

    document: dict[str, object] = {"bundle": str(bundle), "valid": False, "name": None, "version": None}
    document |= {"files": None, "error": None, "golden": None}
    try:
        opened = Bundle.open(bundle)
        document |= {"name": opened.name, "version": opened.manifest.version}
        document |= {"files": len(opened.manifest.all_files()), "valid": True}
        if run:
            results = golden_results(opened, allow_failed=allow_failed)
            document["golden"] = [r.as_json() for r in results]
            document["valid"] = all(r.passed for r in results if r.result != "failed_at_conversion")
    except EdgeSDKError as exc:
        document |= {"valid": False, "error": str(exc)}
    print_json(document)
    if not document["valid"]:
        raise typer.Exit(EXIT_FAILED)


SHOWN_VALUES = 8  # values printed per output; larger outputs are summarised (min, max, mean)
JSON_FULL_VALUES = 1024  # --json carries every value of outputs up to this size


def run_cmd(
    bundle: Path = BUNDLE_ARG,
    input_file: Path = typer.Option(..., "--input", "-i", help=".npz with one array per model input."),
    variant: str | None = typer.Option(None, "--variant", help="Variant id (default: the first)."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write the outputs to this .npz."),
    threads: int | None = typer.Option(None, "--threads", help="Engine threads (default: the engine's choice)."),
    as_json: bool = json_option(),
) -> None:
    """Run a bundle on inputs from an .npz and show the outputs: their values (the first few and min, max and
    mean for a large output) and, for a classifier, the class of each sample. --output saves them whole."""
    import edge_sdk

    with user_errors():
        inputs = load_npz(input_file, "input")
        opened = edge_sdk.open_bundle(bundle)
        chosen = opened.variant(variant).id
        with edge_sdk.load(opened, chosen, threads=threads) as session:
            outputs = session.run(inputs)
    if output:
        np.savez(output, **outputs)  # type: ignore[arg-type]  # numpy's stub misreads **kwargs
    if as_json:
        shown = {name: _output_json(value, _classes(opened, value)) for name, value in outputs.items()}
        about = {"bundle": opened.name, "version": opened.manifest.version, "variant": chosen}
        print_json(about | {"outputs": shown, "saved_to": str(output) if output else None})
        return
    for name, value in outputs.items():
        console.print(escape(_output_line(name, value, _classes(opened, value))), highlight=False)
    if output:
        console.print(f"[green]wrote[/] {output}")


def _classes(bundle: Bundle, value: np.ndarray) -> list[object] | None:
    """A classifier's decision per sample (its label where the bundle names them): only where it is one."""
    if bundle.manifest.task is not Task.CLASSIFICATION or value.ndim != 2 or value.shape[1] <= 1:
        return None
    labels = bundle.manifest.labels
    classes = value.argmax(axis=1).tolist()
    return [labels[c] for c in classes] if len(labels) == value.shape[1] else classes


def _stats(value: np.ndarray) -> dict[str, float | None] | None:
    if value.size == 0 or not (np.issubdtype(value.dtype, np.number) or value.dtype == np.bool_):
        return None
    as_float = value.astype(np.float64)
    return {"min": float(as_float.min()), "max": float(as_float.max()), "mean": float(as_float.mean())}


def _output_line(name: str, value: np.ndarray, classes: list[object] | None) -> str:
    line = f"{name}: {value.dtype}[{'x'.join(map(str, value.shape))}]"
    if classes is not None:
        more = f" … ({len(classes)} samples)" if len(classes) > 32 else ""
        line += f" class {classes[:32]}{more}"
    flat = value.reshape(-1)
    shown = np.array2string(flat[:SHOWN_VALUES], precision=4, separator=", ", suppress_small=True)
    line += f" values {shown[:-1]}{', …]' if flat.size > SHOWN_VALUES else ']'}"
    stats = _stats(value)
    if flat.size > SHOWN_VALUES and stats is not None:
        line += f" min {stats['min']:.4g} max {stats['max']:.4g} mean {stats['mean']:.4g}"
    return line


def _output_json(value: np.ndarray, classes: list[object] | None) -> dict[str, object]:
    """{dtype, shape, values (nested, or null when over JSON_FULL_VALUES), head, min, max, mean, classes}."""
    full = value.size <= JSON_FULL_VALUES
    document: dict[str, object] = {
        "dtype": str(value.dtype),
        "shape": list(value.shape),
        "values": value.tolist() if full else None,
        "head": value.reshape(-1)[:SHOWN_VALUES].tolist(),
    }
    document |= _stats(value) or {"min": None, "max": None, "mean": None}
    document["classes"] = classes
    return document


def pack_cmd(
    bundle: Path = BUNDLE_ARG,
    output: Path = typer.Option(..., "--output", "-o", help="The .edgebundle file to write."),
) -> None:
    """Pack a verified bundle directory into one reproducible .edgebundle file."""
    with user_errors():
        dest = Bundle.open(bundle).pack(output)
    console.print(f"[green]wrote[/] {dest} ({human_bytes(dest.stat().st_size)})")
