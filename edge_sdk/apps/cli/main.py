"""`edge-sdk`: convert models for small devices, inspect and verify bundles, run them."""

from __future__ import annotations

import typer

from edge_sdk import __version__
from edge_sdk.apps.cli.bundle_cmds import inspect_cmd, pack_cmd, run_cmd, verify_cmd
from edge_sdk.apps.cli.cloud_cmds import cloud_app, sync_cmd
from edge_sdk.apps.cli.convert import convert_cmd
from edge_sdk.apps.cli.export_app_cmd import export_app_cmd
from edge_sdk.apps.cli.fit_cmd import fit_cmd
from edge_sdk.apps.cli.flash_cmd import flash_cmd
from edge_sdk.apps.cli.keys_cmds import bundle_app, keys_app
from edge_sdk.apps.cli.plan_cmd import plan_cmd
from edge_sdk.apps.cli.profiles import profiles_app
from edge_sdk.apps.cli.serve_cmds import daemon_app, serve_cmd
from edge_sdk.apps.cli.store_cmds import install_cmd, models_cmd, rollback_cmd

app = typer.Typer(
    name="edge-sdk",
    help="Take a trained model onto small devices: convert it for a device profile into a verified bundle, "
    "inspect and verify bundles, and run them with the engine they were built for.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(profiles_app, name="profiles", help="List and show device profiles (Raspberry Pi, Jetson, phones, host).")
app.command("convert")(convert_cmd)
app.command("inspect")(inspect_cmd)
app.command("fit")(fit_cmd)
app.command("plan")(plan_cmd)
app.command("verify")(verify_cmd)
app.command("run")(run_cmd)
app.command("pack")(pack_cmd)
app.command("export-app")(export_app_cmd)
app.command("install")(install_cmd)
app.command("rollback")(rollback_cmd)
app.command("models")(models_cmd)
app.command("flash")(flash_cmd)
app.command("serve")(serve_cmd)
app.add_typer(daemon_app, name="daemon")
app.add_typer(keys_app, name="keys")
app.add_typer(bundle_app, name="bundle")
app.command("sync")(sync_cmd)
app.add_typer(cloud_app, name="cloud")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"edge-sdk {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Root options."""


def main() -> None:
    app()
