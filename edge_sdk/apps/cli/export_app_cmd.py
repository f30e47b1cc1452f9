"""`edge-sdk export-app`: one language-model variant as a folder a phone app ships (no Python on the phone)."""

from __future__ import annotations

from pathlib import Path

import typer

from edge_sdk.apps.cli.common import console, user_errors


def export_app_cmd(
    bundle: Path = typer.Argument(..., help="A bundle directory or .edgebundle file."),
    variant: str = typer.Option(
        ..., "--variant", help="The variant to ship: an executorch or onnx language-model variant (see inspect)."
    ),
    output: Path = typer.Option(..., "--output", "-o", help="Directory to write the app folder to."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing folder at --output."),
) -> None:
    """Write a phone-ready folder: the .pte (ExecuTorch runner) or ONNX Runtime GenAI model, tokenizer.json,
    chat template, llm_config.json and app.json (engine, files, special tokens, context, accuracy)."""
    from edge_sdk.app_export import export_app
    from edge_sdk.bundle import Bundle

    with user_errors():
        folder = export_app(Bundle.open(bundle), variant, output, overwrite=overwrite)
    console.print(f"[green]wrote[/] {folder} ({variant})")
