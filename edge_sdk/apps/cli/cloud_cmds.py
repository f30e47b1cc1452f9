"""`edge-sdk cloud serve | publish` and `edge-sdk sync`: the cloud gateway, its registry, and pulling from it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID

from edge_sdk.apps.cli.cloud_serve_options import CLOUD_SERVE
from edge_sdk.apps.cli.common import (
    EXIT_FAILED,
    console,
    err_console,
    human_lines_to_stderr,
    json_option,
    print_json,
    transfer_columns,
    user_errors,
)
from edge_sdk.apps.cli.options import on_command_line
from edge_sdk.apps.cli.rollout_cmds import devices_app, rollout_cmd, rollouts_app
from edge_sdk.apps.cli.serve_cmds import announce_start
from edge_sdk.apps.cli.store_cmds import STORE_OPT, _announce, _golden_check
from edge_sdk.errors import ConfigError

if TYPE_CHECKING:
    from cloud_sync.registry import RegistryEntry
    from cloud_sync.sync import SyncReport

cloud_app = typer.Typer(
    help="The cloud side: a gateway devices forward to, with a bundle registry they pull updates from.",
    no_args_is_help=True,
)

KEY_FILE_HELP = "File holding this caller's one key, sent as Authorization: Bearer."
TRUST_HELP = "Public key (PEM) bundles must be signed by; repeatable. Unsigned bundles are refused."


def _bar() -> Progress:
    return Progress(
        "[progress.description]{task.description}", BarColumn(), *transfer_columns(),
        console=console, transient=True,
    )  # fmt: skip


@cloud_app.command("serve")
@CLOUD_SERVE.command
def serve_cmd(
    ctx: typer.Context,
    bundles: list[Path] = typer.Argument(None, help="Bundle directories or .edgebundle files the gateway serves."),
    **given: Any,
) -> None:
    """Run the cloud gateway: devices authenticate with their own key; OpenAI requests are answered from the
    gateway's bundles or passed to --upstream; /v1/telemetry is stored; /v1/registry/bundles publishes, lists
    and serves bundles (HTTP Range, sha256 ETag) for `edge-sdk sync`.

    Every option may also come from a --config TOML file, named as its flag (device-keys = "devices.txt")."""
    from edge_sdk.apps.daemon.config import daemon_config
    from edge_sdk.apps.daemon.pool import BundleSource, DirectorySource
    from edge_sdk.apps.daemon.server import run
    from edge_sdk.apps.gateway.app import build_gateway
    from edge_sdk.apps.gateway.config import gateway_config
    from edge_sdk.apps.gateway.devices import read_device_groups

    with user_errors():
        store: Path | None = given["store"]
        if bundles and store and not on_command_line(ctx, "store"):
            store = None  # bundle paths on the command line win over EDGE_SDK_STORE or a config file's store
        if bundles and store:
            raise ConfigError("give bundle paths or --store DIR, not both")
        source: BundleSource
        if store is not None:
            from edge_sdk.apps.daemon.store_source import StoreSource

            source = StoreSource(store)
        else:
            source = DirectorySource(list(bundles or []))
        upstream = given["upstream"]
        if upstream is not None and not upstream.startswith(("http://", "https://")):
            raise ConfigError(f"--upstream must be the http:// or https:// URL of an OpenAI server, got {upstream!r}")
        settings = CLOUD_SERVE.settings(given)
        settings["groups"] = read_device_groups(given["device_keys"])  # the same file: groups for rollouts
        settings["daemon"] = daemon_config(**settings.get("daemon", {}))
        config = gateway_config(**settings)
        gateway = build_gateway(source, config)  # an unusable registry or database is refused before binding
    own = ", ".join(source.names()) or "none"
    host, port = config.daemon.host, config.daemon.port
    announce_start(
        "cloud gateway on http://%s:%s: own models %s; upstream %s; registry %s",
        *(host, port, own, upstream or "none", config.registry_dir),
        config=config.daemon,
    )
    run(gateway, config.daemon)


@cloud_app.command("publish")
def publish_cmd(
    bundle: Path = typer.Argument(..., help="A bundle directory (packed on the fly) or .edgebundle file."),
    to: str = typer.Option(..., "--to", help="The gateway's URL, e.g. http://gateway:8090."),
    key_file: Path = typer.Option(..., "--key-file", help=KEY_FILE_HELP + " Must be a publisher key."),
    hold: bool = typer.Option(
        False, "--hold", help="Offer it to no device until `edge-sdk cloud rollout` opens it to a group's stages."
    ),
) -> None:
    """Verify a bundle here, then upload it to a gateway's registry (which verifies it again). Without --hold,
    every device may sync it at once."""
    import tempfile

    from cloud_sync.sync import RegistryClient
    from edge_sdk.apps.daemon.server import read_cloud_key
    from edge_sdk.bundle import Bundle

    with user_errors():
        key = read_cloud_key(key_file)
        with tempfile.TemporaryDirectory(prefix="edge-publish-") as tmp:
            opened = Bundle.open(bundle)  # refuse a broken bundle before sending a byte
            packed = bundle if bundle.is_file() else opened.pack(Path(tmp) / opened.name)
            with RegistryClient(to, api_key=key, timeout=600) as client, _bar() as bar:
                task = bar.add_task(f"uploading {opened.name} {opened.manifest.version}", total=packed.stat().st_size)
                entry, new = client.publish(packed, progress=lambda sent: bar.update(task, completed=sent), hold=hold)
    state = "published" if new else "already published (same bytes)"
    console.print(f"[green]{state}[/] {entry.name} {entry.version}, sha256 {entry.sha256[:16]}…", highlight=False)
    if hold:
        console.print(
            f"held: no device is offered it until `edge-sdk cloud rollout {entry.name} {entry.version} --group G` "
            "opens it",
            highlight=False,
        )


# Staged rollouts are gateway commands too (their own module: rollout_cmds.py).
cloud_app.command("rollout")(rollout_cmd)
cloud_app.add_typer(rollouts_app, name="rollouts")
cloud_app.add_typer(devices_app, name="devices")


def sync_cmd(
    source: str = typer.Option(..., "--from", help="The gateway's URL, e.g. http://gateway:8090."),
    store: Path = STORE_OPT,
    key_file: Path | None = typer.Option(None, "--key-file", help=KEY_FILE_HELP),
    trust: list[Path] = typer.Option([], "--trust", help=TRUST_HELP),
    name: list[str] = typer.Option([], "--name", help="Sync only this model; repeatable (default: every model)."),
    version: str | None = typer.Option(None, "--version", help="Install this version of the one --name model."),
    no_check: bool = typer.Option(False, "--no-check", help="Skip re-running golden sets (digests still checked)."),
    attempts: int = typer.Option(4, "--attempts", help="Tries per download; each resumes where the last stopped."),
    as_json: bool = json_option(),
) -> None:
    """Pull newer bundle versions from a gateway's registry into a device store: download (resuming a cut
    download with HTTP Range), check the sha256, verify and install atomically as `edge-sdk install` does.
    An equal version is skipped; a lower one than the active version is refused. Exits 1 if anything was refused."""
    from cloud_sync.sync import Outcome, RegistryClient, sync
    from edge_sdk.apps.daemon.server import read_cloud_key
    from edge_sdk.bundle.signing import load_trusted
    from edge_sdk.store import BundleStore

    with user_errors(), human_lines_to_stderr(as_json):
        keys = [load_trusted(p) for p in trust] if trust else None
        opened = BundleStore(store)
        with (
            RegistryClient(source, api_key=read_cloud_key(key_file) if key_file else None, attempts=attempts) as client,
            _bar() as bar,
        ):
            tasks: dict[str, TaskID] = {}

            def progress(entry: RegistryEntry, done: int) -> None:
                label = f"{entry.name} {entry.version}"
                if label not in tasks:
                    tasks[label] = bar.add_task(label, total=entry.size)
                bar.update(tasks[label], completed=done)

            reports = sync(
                client,
                opened,
                names=name,
                version=version,
                trust=keys,
                check=_announce if no_check else _golden_check,
                progress=progress,
            )
    refused = any(r.outcome is Outcome.REFUSED for r in reports)
    if as_json:
        print_json({"from": source, "store": str(store), "reports": [_report_json(r) for r in reports]})
        if refused:
            raise typer.Exit(EXIT_FAILED)
        return
    for r in reports:
        colour = {
            Outcome.INSTALLED: "green",
            Outcome.UP_TO_DATE: "dim",
            Outcome.HELD: "yellow",
            Outcome.ROLLED_BACK: "yellow",
            Outcome.REFUSED: "red",
        }[r.outcome]
        fetched = ""
        if r.download is not None:
            resumed = f", resumed at {r.download.resumed_from} bytes" if r.download.resumed_from else ""
            fetched = f" ({r.download.received} bytes downloaded{resumed})"
        line = f"[{colour}]{r.outcome.value}[/] {r.name}: {escape(r.detail)}{fetched}"
        (err_console if r.outcome is Outcome.REFUSED else console).print(line, highlight=False)
    if not reports:
        console.print(f"the registry at {source} has nothing to sync", highlight=False)
    if refused:
        raise typer.Exit(EXIT_FAILED)


def _report_json(r: SyncReport) -> dict[str, object]:
    """One model of `sync --json`: what the registry offered, the active version before and after, why."""
    download = r.download
    return {
        "name": r.name,
        "offered": r.offered,
        "active_before": r.active_before,
        "active_after": r.active_after,
        "outcome": r.outcome.value,
        "detail": r.detail,
        "downloaded_bytes": download.received if download else None,
        "resumed_from": download.resumed_from if download else None,
    }
