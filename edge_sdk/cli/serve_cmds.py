"""`edge-sdk serve` and `edge-sdk daemon unit`: run the device daemon, or install it as a service."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import typer

from edge_sdk.cli.common import user_errors
from edge_sdk.errors import ConfigError

daemon_app = typer.Typer(help="Install the daemon as a system service.", no_args_is_help=True)


def serve_cmd(
    bundles: list[Path] = typer.Argument(None, help="Bundle directories or .edgebundle files to serve."),
    store: Path | None = typer.Option(None, "--store", help="Serve the active versions of an install store."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (loopback unless you mean otherwise)."),
    port: int = typer.Option(8080, "--port"),
    api_key_file: Path | None = typer.Option(
        None, "--api-key-file", help="File of bearer keys, one a line; without it there is no auth."
    ),
    concurrency: int = typer.Option(2, "--concurrency", help="Requests running at once per model."),
    queue: int = typer.Option(8, "--queue", help="Requests waiting per model; beyond: 429 with Retry-After."),
    max_body_mb: float = typer.Option(8.0, "--max-body-mb", help="Larger request bodies get 413."),
    timeout: float = typer.Option(120.0, "--timeout", help="Per-request timeout, seconds."),
    drain_timeout: float = typer.Option(10.0, "--drain-timeout", help="On SIGTERM, seconds to finish in-flight work."),
    threads: int | None = typer.Option(None, "--threads", help="Engine threads per model."),
) -> None:
    """Serve bundles over HTTP: OpenAI-compatible /v1/chat/completions, /v1/completions, /v1/embeddings,
    /v1/models; /v1/infer/{model} for tensor models; /health/live, /health/ready and /metrics."""
    from edge_sdk.daemon.config import DaemonConfig
    from edge_sdk.daemon.pool import BundleSource, DirectorySource
    from edge_sdk.daemon.server import read_api_keys, serve

    with user_errors():
        if bool(bundles) == bool(store):
            raise ConfigError("give bundle paths or --store DIR (one of them)")
        source: BundleSource
        if store is not None:
            from edge_sdk.daemon.store_source import StoreSource

            source = StoreSource(store)
        else:
            source = DirectorySource(list(bundles))
        config = DaemonConfig(
            host=host,
            port=port,
            api_keys=read_api_keys(api_key_file) if api_key_file else frozenset(),
            concurrency_per_model=concurrency,
            queue_per_model=queue,
            max_body_bytes=int(max_body_mb * 1024 * 1024),
            request_timeout_s=timeout,
            drain_timeout_s=drain_timeout,
            threads=threads,
        )
    typer.echo(f"serving {', '.join(source.names())} on http://{host}:{port}", err=True)
    serve(source, config)


@daemon_app.command("unit")
def unit_cmd(
    store: Path = typer.Option(Path("/var/lib/edge-sdk"), "--store", help="The install store to serve."),
    user: str = typer.Option("edge-sdk", "--user", help="Dedicated system user the daemon runs as."),
    port: int = typer.Option(8080, "--port"),
    api_key_file: Path = typer.Option(Path("/etc/edge-sdk/api-keys"), "--api-key-file"),
    drain_timeout: int = typer.Option(10, "--drain-timeout"),
) -> None:
    """Print a systemd unit for the daemon (save as /etc/systemd/system/edge-sdk.service)."""
    exe = shlex.join(
        [
            sys.executable,
            "-m",
            "edge_sdk.cli",
            "serve",
            "--store",
            str(store),
            "--port",
            str(port),
            "--api-key-file",
            str(api_key_file),
            "--drain-timeout",
            str(drain_timeout),
        ]
    )
    typer.echo(f"""[Unit]
Description=edge-sdk inference daemon
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
User={user}
Group={user}
ExecStart={exe}
Restart=on-failure
RestartSec=2
# SIGTERM makes the daemon not-ready and drains in-flight requests; give it longer than the drain timeout.
KillSignal=SIGTERM
TimeoutStopSec={drain_timeout + 10}
NoNewPrivileges=true
ProtectSystem=strict
ReadWritePaths={store}
PrivateTmp=true

[Install]
WantedBy=multi-user.target""")
