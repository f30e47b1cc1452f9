"""`edge-sdk cloud serve | publish` and `edge-sdk sync`: the cloud gateway, its registry, and pulling from it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from edge_sdk.apps.cli.common import EXIT_FAILED, console, err_console, user_errors
from edge_sdk.apps.cli.store_cmds import STORE_OPT, _announce, _golden_check
from edge_sdk.errors import ConfigError

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from cloud_sync.registry import RegistryEntry

cloud_app = typer.Typer(
    help="The cloud side: a gateway devices forward to, with a bundle registry they pull updates from.",
    no_args_is_help=True,
)

KEY_FILE_HELP = "File holding this caller's one key, sent as Authorization: Bearer."
TRUST_HELP = "Public key (PEM) bundles must be signed by; repeatable. Unsigned bundles are refused."


def _bar() -> Progress:
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    return Progress(
        "[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
        console=console, transient=True,
    )  # fmt: skip


@cloud_app.command("serve")
def serve_cmd(
    bundles: list[Path] = typer.Argument(None, help="Bundle directories or .edgebundle files the gateway serves."),
    store: Path | None = typer.Option(None, "--store", help="Also serve the active versions of an install store."),
    device_keys: Path = typer.Option(..., "--device-keys", help="File of '<device-id> <key>' lines."),
    publisher_keys: Path | None = typer.Option(
        None, "--publisher-keys", help="File of '<id> <key>' lines allowed to publish bundles (none: nobody may)."
    ),
    registry: Path = typer.Option(..., "--registry", help="Directory of published bundles (created if missing)."),
    trust: list[Path] = typer.Option([], "--trust", help="Accept only bundles signed by these keys; repeatable."),
    upstream: str | None = typer.Option(
        None, "--upstream", help="OpenAI-compatible server (vLLM, llama.cpp server, ...) for models not served here."
    ),
    upstream_key_file: Path | None = typer.Option(None, "--upstream-key-file", help="The upstream's API key."),
    upstream_timeout: float = typer.Option(
        300.0,
        "--upstream-timeout",
        help="Seconds to wait for the upstream, per try (failures before the first "
        "byte are retried with backoff; a circuit breaker opens when it keeps failing).",
    ),
    telemetry_db: Path | None = typer.Option(
        None, "--telemetry-db", help="SQLite file for device telemetry (default: <registry>/telemetry.sqlite3)."
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (use 0.0.0.0 behind TLS for devices)."),
    port: int = typer.Option(8090, "--port"),
    max_upload_mb: float = typer.Option(8192.0, "--max-upload-mb", help="Larger published bundles get 413."),
    concurrency: int = typer.Option(2, "--concurrency", help="Requests running at once per own model."),
    idempotency_lease: float = typer.Option(
        300.0,
        "--idempotency-lease",
        help="Seconds an unrenewed in-progress Idempotency-Key of a receiver on another host is kept before a "
        "retry takes it over (one left by a dead process of this host is taken over at once).",
    ),
    context: int | None = typer.Option(
        None,
        "--context",
        help="Own language models' context in tokens (default 2048): a gateway can serve longer "
        "prompts than its devices.",
    ),
) -> None:
    """Run the cloud gateway: devices authenticate with their own key; OpenAI requests are answered from the
    gateway's bundles or passed to --upstream; /v1/telemetry is stored; /v1/registry/bundles publishes, lists
    and serves bundles (HTTP Range, sha256 ETag) for `edge-sdk sync`."""
    from edge_sdk.apps.daemon.config import daemon_config
    from edge_sdk.apps.daemon.pool import BundleSource, DirectorySource
    from edge_sdk.apps.daemon.server import read_cloud_key, run
    from edge_sdk.apps.gateway.app import GatewayConfig, build_gateway
    from edge_sdk.apps.gateway.devices import read_key_file
    from edge_sdk.bundle.signing import load_trusted

    with user_errors():
        if bundles and store:
            raise ConfigError("give bundle paths or --store DIR, not both")
        source: BundleSource
        if store is not None:
            from edge_sdk.apps.daemon.store_source import StoreSource

            source = StoreSource(store)
        else:
            source = DirectorySource(list(bundles or []))
        if upstream is not None and not upstream.startswith(("http://", "https://")):
            raise ConfigError(f"--upstream must be the http:// or https:// URL of an OpenAI server, got {upstream!r}")
        config = GatewayConfig(
            devices=read_key_file(device_keys),
            publishers=read_key_file(publisher_keys, what="publisher key file") if publisher_keys else {},
            registry_dir=registry,
            telemetry_db=telemetry_db,
            trust=tuple(load_trusted(p) for p in trust),
            upstream_url=upstream,
            upstream_api_key=read_cloud_key(upstream_key_file) if upstream_key_file else None,
            upstream_timeout_s=upstream_timeout,
            max_upload_bytes=int(max_upload_mb * 1024 * 1024),
            idempotency_lease_s=idempotency_lease,
            daemon=daemon_config(host=host, port=port, concurrency_per_model=concurrency, context=context),
        )
        gateway = build_gateway(source, config)  # an unusable registry or database is refused before binding
    import logging

    # the gateway's per-device request log, beside uvicorn's own
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
    own = ", ".join(source.names()) or "none"
    typer.echo(
        f"cloud gateway on http://{host}:{port}: own models {own}; upstream {upstream or 'none'}; registry {registry}",
        err=True,
    )
    run(gateway, config.daemon)


@cloud_app.command("publish")
def publish_cmd(
    bundle: Path = typer.Argument(..., help="A bundle directory (packed on the fly) or .edgebundle file."),
    to: str = typer.Option(..., "--to", help="The gateway's URL, e.g. http://gateway:8090."),
    key_file: Path = typer.Option(..., "--key-file", help=KEY_FILE_HELP + " Must be a publisher key."),
) -> None:
    """Verify a bundle here, then upload it to a gateway's registry (which verifies it again)."""
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
                entry, new = client.publish(packed, progress=lambda sent: bar.update(task, completed=sent))
    state = "published" if new else "already published (same bytes)"
    console.print(f"[green]{state}[/] {entry.name} {entry.version}, sha256 {entry.sha256[:16]}…", highlight=False)


def sync_cmd(
    source: str = typer.Option(..., "--from", help="The gateway's URL, e.g. http://gateway:8090."),
    store: Path = STORE_OPT,
    key_file: Path | None = typer.Option(None, "--key-file", help=KEY_FILE_HELP),
    trust: list[Path] = typer.Option([], "--trust", help=TRUST_HELP),
    name: list[str] = typer.Option([], "--name", help="Sync only this model; repeatable (default: every model)."),
    version: str | None = typer.Option(None, "--version", help="Install this version of the one --name model."),
    no_check: bool = typer.Option(False, "--no-check", help="Skip re-running golden sets (digests still checked)."),
    attempts: int = typer.Option(4, "--attempts", help="Tries per download; each resumes where the last stopped."),
) -> None:
    """Pull newer bundle versions from a gateway's registry into a device store: download (resuming a cut
    download with HTTP Range), check the sha256, verify and install atomically as `edge-sdk install` does.
    An equal version is skipped; a lower one than the active version is refused. Exits 1 if anything was refused."""
    from rich.markup import escape

    from cloud_sync.sync import Outcome, RegistryClient, sync
    from edge_sdk.apps.daemon.server import read_cloud_key
    from edge_sdk.bundle.signing import load_trusted
    from edge_sdk.store import BundleStore

    with user_errors():
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
    for r in reports:
        colour = {
            Outcome.INSTALLED: "green",
            Outcome.UP_TO_DATE: "dim",
            Outcome.HELD: "yellow",
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
    if any(r.outcome is Outcome.REFUSED for r in reports):
        raise typer.Exit(EXIT_FAILED)
