"""`edge-sdk`: convert models for small devices, inspect and verify bundles, run them."""

from __future__ import annotations

import typer

from edge_sdk import __version__
from edge_sdk.apps.cli.lazy import Entry, LazyGroup

_CLI = "edge_sdk.apps.cli"


class RootGroup(LazyGroup):
    """`edge-sdk`'s commands, in the order `--help` lists them; each module is imported when its command is used
    (lazy.py says why)."""

    entries = (
        Entry("convert", f"{_CLI}.convert:convert_cmd"),
        Entry("inspect", f"{_CLI}.bundle_cmds:inspect_cmd"),
        Entry("fit", f"{_CLI}.fit_cmd:fit_cmd"),
        Entry("plan", f"{_CLI}.plan_cmd:plan_cmd"),
        Entry("verify", f"{_CLI}.bundle_cmds:verify_cmd"),
        Entry("run", f"{_CLI}.bundle_cmds:run_cmd"),
        Entry("chat", f"{_CLI}.chat_cmd:chat_cmd"),
        Entry("pack", f"{_CLI}.bundle_cmds:pack_cmd"),
        Entry("export-app", f"{_CLI}.export_app_cmd:export_app_cmd"),
        Entry("install", f"{_CLI}.store_cmds:install_cmd"),
        Entry("rollback", f"{_CLI}.store_cmds:rollback_cmd"),
        Entry("activate", f"{_CLI}.store_cmds:activate_cmd"),
        Entry("flash", f"{_CLI}.flash_cmd:flash_cmd"),
        Entry("serve", f"{_CLI}.serve_cmds:serve_cmd"),
        Entry("sync", f"{_CLI}.cloud_cmds:sync_cmd"),
        Entry("profiles", f"{_CLI}.profiles:profiles_app",
              help="List and show device profiles (Raspberry Pi, Jetson, phones, host)."),
        Entry("models", f"{_CLI}.store_cmds:models_app"),
        Entry("daemon", f"{_CLI}.serve_cmds:daemon_app"),
        Entry("keys", f"{_CLI}.keys_cmds:keys_app"),
        Entry("bundle", f"{_CLI}.keys_cmds:bundle_app"),
        Entry("cloud", f"{_CLI}.cloud_cmds:cloud_app"),  # with `rollout`, `rollouts` and `devices` (rollout_cmds)
    )  # fmt: skip


app = typer.Typer(
    name="edge-sdk",
    help="Take a trained model onto small devices: convert it for a device profile into a verified bundle, "
    "inspect and verify bundles, and run them with the engine they were built for.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish, PowerShell
    pretty_exceptions_enable=False,
    cls=RootGroup,
)


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
    app(prog_name="edge-sdk")  # also under `python -m edge_sdk.cli`: one name in usage lines and completion
