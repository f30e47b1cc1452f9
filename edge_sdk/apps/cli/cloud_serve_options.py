"""The options of `edge-sdk cloud serve` (the gateway), as serve_options.py describes for `edge-sdk serve`."""

from __future__ import annotations

from pathlib import Path

from edge_sdk.apps.cli.options import MiB, Opt, OptionTable
from edge_sdk.apps.daemon.config import read_cloud_key
from edge_sdk.apps.gateway.config import GatewayConfig


def _device_keys(path: Path) -> dict[str, str]:
    from edge_sdk.apps.gateway.devices import read_key_file

    return read_key_file(path)


def _publisher_keys(path: Path) -> dict[str, str]:
    from edge_sdk.apps.gateway.devices import read_key_file

    return read_key_file(path, what="publisher key file")


def _trusted(paths: list[Path]) -> tuple[object, ...]:
    from edge_sdk.bundle.signing import load_trusted

    return tuple(load_trusted(p) for p in paths)


CLOUD_SERVE = OptionTable(
    GatewayConfig,
    [
        Opt("--store", None, "Also serve the active versions of an install store.", env="EDGE_SDK_STORE",
            type=Path | None, default=None),
        Opt("--device-keys", "devices", "File of '<device-id> <key> [groups=a,b]' lines (groups: for staged "
            "rollouts).", env="EDGE_SDK_DEVICE_KEYS",
            type=Path, to_field=_device_keys),
        Opt("--publisher-keys", "publishers",
            "File of '<id> <key>' lines allowed to publish bundles (none: nobody may).",
            env="EDGE_SDK_PUBLISHER_KEYS", type=Path | None, default=None, to_field=_publisher_keys),
        Opt("--registry", "registry_dir", "Directory of published bundles (created if missing)."),
        Opt("--trust", "trust", "Accept only bundles signed by these keys; repeatable.",
            type=list[Path], default=[], to_field=_trusted),
        Opt("--upstream", "upstream_url",
            "OpenAI-compatible server (vLLM, llama.cpp server, ...) for models not served here."),
        Opt("--upstream-key-file", "upstream_api_key", "The upstream's API key.", env="EDGE_SDK_UPSTREAM_KEY_FILE",
            type=Path | None, default=None, to_field=read_cloud_key),
        Opt("--upstream-timeout", "upstream_timeout_s", "Seconds to wait for the upstream, per try (failures "
            "before the first byte are retried with backoff; a circuit breaker opens when it keeps failing)."),
        Opt("--database-url", "database_url", "postgresql://user:password@host/db: every piece of gateway state "
            "(telemetry, idempotency, registry index, rollouts) in PostgreSQL, so several replicas serve one fleet "
            "(bundle files stay in --registry, which every replica mounts). Default: SQLite files in --registry.",
            env="EDGE_SDK_DATABASE_URL"),
        Opt("--telemetry-db", "telemetry_db",
            "SQLite file for device telemetry (default: <registry>/telemetry.sqlite3)."),
        Opt("--host", "daemon.host", "Address to bind (use 0.0.0.0 behind TLS for devices).", env="EDGE_SDK_HOST"),
        Opt("--port", "daemon.port", "Port to bind.", env="EDGE_SDK_PORT"),
        Opt("--max-upload-mb", "max_upload_bytes", "Larger published bundles get 413.", unit=MiB),
        Opt("--concurrency", "daemon.concurrency_per_model", "Requests running at once per own model."),
        Opt("--max-connections", "daemon.max_connections", "Concurrent connections (a device keeps one open: "
            "give a replica more than the devices it may hold); beyond: 503."),
        Opt("--idempotency-lease", "idempotency_lease_s", "Seconds an unrenewed in-progress Idempotency-Key of a "
            "receiver on another host is kept before a retry takes it over (one left by a dead process of this "
            "host is taken over at once)."),
        Opt("--context", "daemon.context", "Own language models' context in tokens (default 2048): a gateway can "
            "serve longer prompts than its devices."),
        Opt("--log-level", "daemon.log_level", "Least severe log lines shown: debug, info, warning or error.",
            type=str),
        Opt("--log-format", "daemon.log_format", "text, or json: one object a line (time, level, logger, message and "
            "the event's fields) for collectors.", type=str),
    ],
)  # fmt: skip
