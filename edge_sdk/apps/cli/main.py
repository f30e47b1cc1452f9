"""`edge-sdk`: convert models for small devices, inspect and verify bundles, run them."""

from __future__ import annotations

import typer

from edge_sdk import __version__
from edge_sdk.apps.cli.bundle_cmds import inspect_cmd, pack_cmd, run_cmd, verify_cmd
from edge_sdk.apps.cli.chat_cmd import chat_cmd
from edge_sdk.apps.cli.cloud_cmds import cloud_app, sync_cmd
from edge_sdk.apps.cli.convert import convert_cmd
from edge_sdk.apps.cli.export_app_cmd import export_app_cmd
from edge_sdk.apps.cli.fit_cmd import fit_cmd
from edge_sdk.apps.cli.flash_cmd import flash_cmd
from edge_sdk.apps.cli.helptext import tidy
from edge_sdk.apps.cli.keys_cmds import bundle_app, keys_app
from edge_sdk.apps.cli.plan_cmd import plan_cmd
from edge_sdk.apps.cli.profiles import profiles_app
from edge_sdk.apps.cli.rollout_cmds import devices_app, rollout_cmd, rollouts_app
from edge_sdk.apps.cli.serve_cmds import daemon_app, serve_cmd
from edge_sdk.apps.cli.store_cmds import activate_cmd, install_cmd, models_app, rollback_cmd

app = typer.Typer(
    name="edge-sdk",
    help="Take a trained model onto small devices: convert it for a device profile into a verified bundle, "
    "inspect and verify bundles, and run them with the engine they were built for.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish, PowerShell
    pretty_exceptions_enable=False,
)
app.add_typer(profiles_app, name="profiles", help="List and show device profiles (Raspberry Pi, Jetson, phones, host).")
app.command("convert")(convert_cmd)
app.command("inspect")(inspect_cmd)
app.command("fit")(fit_cmd)
app.command("plan")(plan_cmd)
app.command("verify")(verify_cmd)
app.command("run")(run_cmd)
app.command("chat")(chat_cmd)
app.command("pack")(pack_cmd)
app.command("export-app")(export_app_cmd)
app.command("install")(install_cmd)
app.command("rollback")(rollback_cmd)
app.command("activate")(activate_cmd)
app.add_typer(models_app, name="models")
app.command("flash")(flash_cmd)
app.command("serve")(serve_cmd)
app.add_typer(daemon_app, name="daemon")
app.add_typer(keys_app, name="keys")
app.add_typer(bundle_app, name="bundle")
app.command("sync")(sync_cmd)
cloud_app.command("rollout")(rollout_cmd)
cloud_app.add_typer(rollouts_app, name="rollouts")
cloud_app.add_typer(devices_app, name="devices")
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


tidy(app)


def main() -> None:
    app(prog_name="edge-sdk")  # also under `python -m edge_sdk.cli`: one name in usage lines and completion
