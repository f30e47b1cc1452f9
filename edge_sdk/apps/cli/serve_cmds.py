"""`edge-sdk serve`, `daemon config`, `daemon unit`: run the device daemon, configure it, install it as a service."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from edge_sdk.apps.cli.common import user_errors
from edge_sdk.apps.cli.options import on_command_line
from edge_sdk.apps.cli.serve_options import SERVE
from edge_sdk.errors import ConfigError, choices

if TYPE_CHECKING:
    from edge_sdk.apps.daemon.config import DaemonConfig
    from edge_sdk.apps.daemon.pool import BundleSource

daemon_app = typer.Typer(help="The daemon's config file, and the daemon as a system service.", no_args_is_help=True)


@SERVE.command
def serve_cmd(
    ctx: typer.Context,
    bundles: list[Path] = typer.Argument(None, help="Bundle directories or .edgebundle files to serve."),
    **given: Any,
) -> None:
    """Serve bundles over HTTP: OpenAI-compatible /v1/chat/completions, /v1/completions, /v1/embeddings,
    /v1/models; /v1/infer/{model} for tensor models; /health/live, /health/ready and /metrics.

    With --cloud-url each OpenAI request is routed to the device or the cloud; the answer says where and why
    in the X-Edge-Route and X-Edge-Route-Reason headers (callers may send X-Edge-Route: local|cloud|auto).
    POST /v1/jobs queues requests that may wait (durably, in --queue-path) and delivers them to the cloud when
    it is reachable; GET /v1/jobs/{id} gives the state and result.

    Every option may also come from a --config TOML file (`edge-sdk daemon config` prints one with the defaults)."""
    from edge_sdk.apps.daemon.server import serve

    with user_errors():
        source, config = daemon_settings(bundles, given, store_given=on_command_line(ctx, "store"))
    announce_start("serving %s on http://%s:%s", ", ".join(source.names()), config.host, config.port, config=config)
    with user_errors():
        serve(source, config)


def daemon_settings(
    bundles: list[Path] | None, given: dict[str, Any], *, store_given: bool = True
) -> tuple[BundleSource, DaemonConfig]:
    """What `serve` serves, and its DaemonConfig, from the options (command line, environment, config file)."""
    from edge_sdk.apps.daemon.config import daemon_config
    from edge_sdk.apps.daemon.pool import DirectorySource

    store: Path | None = given["store"]
    if bundles and not store_given:
        store = None  # bundle paths on the command line win over a store from EDGE_SDK_STORE or a config file
    if bool(bundles) == bool(store):
        raise ConfigError("give bundle paths or --store DIR (one of them)")
    source: BundleSource
    if store is not None:
        from edge_sdk.apps.daemon.store_source import StoreSource

        source = StoreSource(store)
    else:
        source = DirectorySource(list(bundles or []))
    if given["cloud_key_file"] is not None and given["cloud_url"] is None:
        raise ConfigError("--cloud-key-file needs --cloud-url")
    settings = SERVE.settings(given)
    settings["variants"] = _pinned_variants(source, given["variant"], given["profile"])
    settings.update(queue_options(store, given["queue_path"], given["no_queue"]))
    return source, daemon_config(**settings)


def _pinned_variants(source: BundleSource, given: list[str], profile: str | None) -> dict[str, str]:
    """`--variant ID` / `MODEL=ID` as {model: id} ("*": every model), checked against the bundles at start."""
    from device_profiles import load_profile

    if profile is not None:
        load_profile(profile)  # an unknown id or a bad file is refused now, naming the valid ids
    pins: dict[str, str] = {}
    names = source.names()
    for item in given:
        model, _, variant_id = item.rpartition("=")
        if model and model not in names:
            raise ConfigError(f"--variant {item!r}: no model {model!r} is served; served: {choices(names)}")
        for name in [model] if model else names:
            ids = [v.id for v in source.open(name).variants]
            if variant_id not in ids:
                raise ConfigError(
                    f"--variant {item!r}: {name!r} has no variant {variant_id!r}; variants: {choices(ids)}"
                )
        pins[model or "*"] = variant_id
    return pins


def queue_options(store: Path | None, queue_path: Path | None, no_queue: bool) -> dict[str, object]:
    """The offline queue's path: by default beside the store (None: no queue)."""
    if not no_queue and queue_path is None:
        state = Path.home() / ".local" / "state" / "edge-sdk"
        queue_path = (store if store is not None else state) / "queue.sqlite"
    return {"queue_path": None if no_queue else queue_path}


DEFAULT_CONFIG = Path("/etc/edge-sdk/daemon.toml")


@daemon_app.command("config")
def config_cmd(
    store: Path | None = typer.Option(None, "--store", help="Write this store into the file (uncommented)."),
) -> None:
    """Print a config file for `serve --config`: every option, commented, at its default (uncomment to change)."""
    typer.echo("# edge-sdk serve --config FILE: each key is a flag without '--'; flags and EDGE_SDK_* override.")
    if store is not None:
        typer.echo(f"store = {json.dumps(str(store))}")
    typer.echo(SERVE.toml_template(), nl=False)


@daemon_app.command("unit")
def unit_cmd(
    config: Path = typer.Option(
        DEFAULT_CONFIG, "--config", help="The config file the service reads (`edge-sdk daemon config` writes one)."
    ),
    store: Path = typer.Option(
        Path("/var/lib/edge-sdk"), "--store", help="The store it serves, unless the config file names one."
    ),
    user: str = typer.Option("edge-sdk", "--user", help="Dedicated system user the daemon runs as."),
) -> None:
    """Print a systemd unit for the daemon (save as /etc/systemd/system/edge-sdk.service) that runs
    `edge-sdk serve --config FILE`; on stderr, how to create its user and the files it reads."""
    from edge_sdk.apps.cli.options import read_config_file
    from edge_sdk.apps.daemon.config import DaemonConfig

    with user_errors():
        values = read_config_file(config, SERVE) if config.is_file() else {}
    store = Path(values.get("store") or store)
    drain = float(values.get("drain_timeout", DaemonConfig().drain_timeout_s))
    writable = sorted({str(store), *([str(Path(values["queue_path"]).parent)] if values.get("queue_path") else [])})
    args = [sys.executable, "-m", "edge_sdk.cli", "serve", "--config", str(config)]
    if "store" not in values:
        args += ["--store", str(store)]
    typer.echo(f"""[Unit]
Description=edge-sdk inference daemon
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
User={user}
Group={user}
ExecStart={shlex.join(args)}
Restart=on-failure
RestartSec=2
# SIGTERM makes the daemon not-ready and drains in-flight requests; give it longer than the drain timeout.
KillSignal=SIGTERM
TimeoutStopSec={int(drain) + 10}
NoNewPrivileges=true
ProtectSystem=strict
ReadWritePaths={" ".join(writable)}
PrivateTmp=true

[Install]
WantedBy=multi-user.target""")
    missing = "" if config.is_file() else f"  edge-sdk daemon config | sudo tee {config}   # then edit it\n"
    typer.echo(
        f"# before `systemctl enable --now edge-sdk`, as root:\n"
        f"  useradd --system --user-group --home-dir {store} --shell /usr/sbin/nologin {user}\n"
        f"  install -d -o {user} -g {user} -m 0750 {store}\n"
        f"  install -d -m 0755 {config.parent}\n{missing}"
        f"  # key files the config names (api-key-file, cloud-key-file) must be readable by {user}",
        err=True,
    )


def announce_start(message: str, *args: object, config: DaemonConfig) -> None:
    """The first line a server prints, as a log line in the format asked for (so `--log-format json | jq` reads
    every line)."""
    import logging

    from edge_sdk.apps.daemon.logs import configure_logging

    configure_logging(config.log_level, config.log_format)
    logging.getLogger("edge_sdk.daemon").warning(message, *args)  # shown at every --log-level
