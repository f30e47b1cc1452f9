"""`edge-sdk serve` and `edge-sdk daemon unit`: run the device daemon, or install it as a service."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from edge_sdk.apps.cli.common import read_chat_template, user_errors
from edge_sdk.errors import ConfigError, choices

if TYPE_CHECKING:
    from edge_sdk.apps.daemon.pool import BundleSource

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
    header_timeout: float = typer.Option(
        10.0, "--header-timeout", help="Seconds for a request's headers to arrive; then the connection closes."
    ),
    body_timeout: float = typer.Option(30.0, "--body-timeout", help="Seconds without body data before a 408."),
    max_connections: int = typer.Option(512, "--max-connections", help="Concurrent connections; beyond: 503."),
    max_embedding_inputs: int = typer.Option(
        256, "--max-embedding-inputs", help="Texts per /v1/embeddings request; beyond: 400."
    ),
    allow_nonfinite: bool = typer.Option(
        False, "--allow-nonfinite", help="Pass NaN/Infinity in tensor inputs to the model (default: 422)."
    ),
    threads: int | None = typer.Option(None, "--threads", help="Engine threads per model."),
    context: int | None = typer.Option(
        None, "--context", help="Language models' context in tokens (default 2048); longer requests go to the cloud."
    ),
    profile: str | None = typer.Option(
        None,
        "--profile",
        help="Serve as this device (a profile id or YAML file; default: the detected host): its memory budget, "
        "and the variant of each bundle that fits it best.",
    ),
    variant: list[str] = typer.Option(
        [],
        "--variant",
        help="Serve this variant instead of the best for the device: ID (every bundle served) or MODEL=ID; repeatable.",
    ),
    chat_template: Path | None = typer.Option(
        None, "--chat-template", help="Jinja chat template file used for every language model served."
    ),
    preload: bool = typer.Option(
        True,
        "--preload/--no-preload",
        help="Load the served models at start, those that fit the memory budget; /health/ready answers 200 once "
        "they are loaded. Without: each loads on its first request.",
    ),
    cloud_url: str | None = typer.Option(
        None,
        "--cloud-url",
        help="Cloud target for what the device cannot serve: any OpenAI-compatible server "
        "or `edge-sdk cloud serve`. Without it everything stays local.",
    ),
    cloud_key_file: Path | None = typer.Option(None, "--cloud-key-file", help="File holding this device's cloud key."),
    slo_ms: float | None = typer.Option(
        None, "--slo-ms", help="Send a request to the cloud when its estimated local queue wait is longer."
    ),
    privacy: list[str] = typer.Option(
        [], "--privacy", help="Never send this model's requests to the cloud (repeatable; 'all' for every model)."
    ),
    cloud_timeout: float = typer.Option(60.0, "--cloud-timeout", help="Seconds to wait for the cloud's next byte."),
    cloud_retries: int = typer.Option(
        2, "--cloud-retries", help="Retries of a failed cloud call (before its first byte)."
    ),
    breaker_failures: int = typer.Option(
        5, "--breaker-failures", help="Cloud failures in a row that open the breaker."
    ),
    breaker_reset: float = typer.Option(30.0, "--breaker-reset", help="Seconds the breaker stays open before a trial."),
    # Jobs, the offline queue and telemetry (see README "Jobs and the offline queue").
    queue_path: Path | None = typer.Option(
        None, "--queue-path", help="The offline queue (SQLite); default <store>/queue.sqlite or ~/.local/state."
    ),
    no_queue: bool = typer.Option(False, "--no-queue", help="No offline queue: /v1/jobs answers 503."),
    queue_max_items: int = typer.Option(10_000, "--queue-max-items", help="Waiting items; beyond, new jobs get 507."),
    queue_ttl: float = typer.Option(7 * 24 * 3600.0, "--queue-ttl", help="Seconds an item may wait, then expired."),
    telemetry_policy: str = typer.Option(
        "drop-oldest", "--telemetry-policy", help="Telemetry when the queue is full: drop-oldest or reject-new."
    ),
    telemetry_interval: float = typer.Option(60.0, "--telemetry-interval", help="Seconds between snapshots; 0: off."),
    delivery_concurrency: int = typer.Option(4, "--delivery-concurrency", help="Deliveries in flight at once."),
    delivery_max_backoff: float = typer.Option(60.0, "--delivery-max-backoff", help="Longest wait between tries."),
    device_id: str | None = typer.Option(
        None,
        "--device-id",
        help="Device id sent with telemetry (default: none; the cloud knows the device by its key).",
    ),
) -> None:
    """Serve bundles over HTTP: OpenAI-compatible /v1/chat/completions, /v1/completions, /v1/embeddings,
    /v1/models; /v1/infer/{model} for tensor models; /health/live, /health/ready and /metrics.

    With --cloud-url each OpenAI request is routed to the device or the cloud; the answer says where and why
    in the X-Edge-Route and X-Edge-Route-Reason headers (callers may send X-Edge-Route: local|cloud|auto).
    POST /v1/jobs queues requests that may wait (durably, in --queue-path) and delivers them to the cloud when
    it is reachable; GET /v1/jobs/{id} gives the state and result."""
    from edge_sdk.apps.daemon.config import daemon_config
    from edge_sdk.apps.daemon.pool import DirectorySource
    from edge_sdk.apps.daemon.server import read_api_keys, read_cloud_key, serve

    with user_errors():
        if bool(bundles) == bool(store):
            raise ConfigError("give bundle paths or --store DIR (one of them)")
        source: BundleSource
        if store is not None:
            from edge_sdk.apps.daemon.store_source import StoreSource

            source = StoreSource(store)
        else:
            source = DirectorySource(list(bundles))
        if cloud_key_file is not None and cloud_url is None:
            raise ConfigError("--cloud-key-file needs --cloud-url")
        config = daemon_config(
            host=host,
            port=port,
            api_keys=read_api_keys(api_key_file) if api_key_file else frozenset(),
            concurrency_per_model=concurrency,
            queue_per_model=queue,
            max_body_bytes=int(max_body_mb * 1024 * 1024),
            request_timeout_s=timeout,
            drain_timeout_s=drain_timeout,
            header_timeout_s=header_timeout,
            body_timeout_s=body_timeout,
            max_connections=max_connections,
            max_embedding_inputs=max_embedding_inputs,
            allow_nonfinite=allow_nonfinite,
            threads=threads,
            context=context,
            profile=profile,
            variants=_pinned_variants(source, variant, profile),
            chat_template=read_chat_template(chat_template) if chat_template is not None else None,
            preload=preload,
            cloud_url=cloud_url,
            cloud_api_key=read_cloud_key(cloud_key_file) if cloud_key_file else None,
            slo_ms=slo_ms,
            local_only_models=frozenset(privacy),
            cloud_timeout_s=cloud_timeout,
            cloud_retries=cloud_retries,
            breaker_failures=breaker_failures,
            breaker_reset_s=breaker_reset,
            **queue_options(
                store,
                queue_path,
                no_queue,
                queue_max_items=queue_max_items,
                queue_ttl_s=queue_ttl,
                queue_telemetry_policy=telemetry_policy,
                telemetry_interval_s=telemetry_interval,
                delivery_concurrency=delivery_concurrency,
                delivery_max_backoff_s=delivery_max_backoff,
                device_id=device_id,
            ),
        )
    typer.echo(f"serving {', '.join(source.names())} on http://{host}:{port}", err=True)
    import logging

    # The daemon's own log lines (a route per request, the breaker's moves) beside uvicorn's.
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
    with user_errors():
        serve(source, config)


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


def queue_options(store: Path | None, queue_path: Path | None, no_queue: bool, **options: object) -> dict[str, object]:
    """The DaemonConfig fields of the offline queue: its path by default beside the store."""
    from cloud_sync.queue import CapPolicy

    policy = options["queue_telemetry_policy"]
    if policy not in {p.value for p in CapPolicy}:
        raise ConfigError(f"--telemetry-policy {policy!r} is not one of: {choices(p.value for p in CapPolicy)}")
    if not no_queue and queue_path is None:
        state = Path.home() / ".local" / "state" / "edge-sdk"
        queue_path = (store if store is not None else state) / "queue.sqlite"
    return {"queue_path": None if no_queue else queue_path, **options}


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
