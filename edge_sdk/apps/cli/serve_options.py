"""The options of `edge-sdk serve` (those of `edge-sdk cloud serve` are in cloud_serve_options.py, so the daemon's
start does not build the gateway's config model): one line per flag (options.py says how a line becomes a flag,
a config-file key and a config field). A default lives only in DaemonConfig / GatewayConfig.

To add a flag:
1. the field, with its default, in DaemonConfig (edge_sdk/apps/daemon/config.py) or GatewayConfig
   (edge_sdk/apps/gateway/config.py); an enum type gives a choice flag, `list[str]` a repeatable one;
2. one line below: `Opt("--log-level", "log_level", "Help text.")` in SERVE, and for the gateway
   `Opt("--log-level", "daemon.log_level", "Help text.")` in CLOUD_SERVE (cloud_serve_options.py; a daemon field
   inside GatewayConfig);
   `env="EDGE_SDK_..."` when it is a common one; `unit=MiB` when the flag counts in other units than the field;
   `type=..., default=..., to_field=fn` when the flag is a file whose contents are the field (key files);
   `field=None` (with type and default) for a value the command uses itself, read from `given["name"]`;
3. the command reads it from the config it builds (`config.log_level`);
4. regenerate tests/data/surface (EDGE_SDK_UPDATE_SURFACE=1); tests/apps/cli/test_config.py checks the default.
`--help`, the `--config` file key (the flag without '--'), `--print-config` and `daemon config` follow."""

from __future__ import annotations

from pathlib import Path

from edge_sdk.apps.cli.common import read_chat_template
from edge_sdk.apps.cli.options import MiB, Opt, OptionTable
from edge_sdk.apps.daemon.config import DaemonConfig, read_api_keys, read_cloud_key

SERVE = OptionTable(
    DaemonConfig,
    [
        Opt("--store", None, "Serve the active versions of an install store.", env="EDGE_SDK_STORE",
            type=Path | None, default=None),
        Opt("--host", "host", "Address to bind (loopback unless you mean otherwise).", env="EDGE_SDK_HOST"),
        Opt("--port", "port", "Port to bind.", env="EDGE_SDK_PORT"),
        Opt("--api-key-file", "api_keys", "File of bearer keys, one a line; without it there is no auth.",
            env="EDGE_SDK_API_KEY_FILE", type=Path | None, default=None, to_field=read_api_keys),
        Opt("--concurrency", "concurrency_per_model", "Requests running at once per model."),
        Opt("--queue", "queue_per_model", "Requests waiting per model; beyond: 429 with Retry-After."),
        Opt("--max-body-mb", "max_body_bytes", "Larger request bodies get 413.", unit=MiB),
        Opt("--timeout", "request_timeout_s", "Per-request timeout, seconds."),
        Opt("--drain-timeout", "drain_timeout_s", "On SIGTERM, seconds to finish in-flight work."),
        Opt("--header-timeout", "header_timeout_s",
            "Seconds for a request's headers to arrive; then the connection closes."),
        Opt("--body-timeout", "body_timeout_s", "Seconds without body data before a 408."),
        Opt("--max-connections", "max_connections", "Concurrent connections; beyond: 503."),
        Opt("--max-embedding-inputs", "max_embedding_inputs", "Texts per /v1/embeddings request; beyond: 400."),
        Opt("--allow-nonfinite", "allow_nonfinite", "Pass NaN/Infinity in tensor inputs to the model (default: 422)."),
        Opt("--threads", "threads", "Engine threads per model."),
        Opt("--context", "context",
            "Language models' context in tokens (default 2048); longer requests go to the cloud."),
        Opt("--profile", "profile", "Serve as this device (a profile id or YAML file; default: the detected host): "
            "its memory budget, and the variant of each bundle that fits it best."),
        Opt("--variant", None, "Serve this variant instead of the best for the device: ID (every bundle served) or "
            "MODEL=ID; repeatable.", type=list[str], default=[]),
        Opt("--chat-template", "chat_template", "Jinja chat template file used for every language model served.",
            type=Path | None, default=None, to_field=read_chat_template),
        Opt("--preload/--no-preload", "preload", "Load the served models at start (those that fit the budget and "
            "free memory); /health/ready turns 200 once they are loaded."),
        Opt("--prompt-cache-mb", "prompt_cache_mb", "RAM per language model for states of earlier prompts, so a "
            "shared prefix (a long system prompt) is not evaluated again; 0 evaluates every prompt whole."),
        Opt("--speculative", "speculative", "Speculative decoding: 'prompt-lookup' drafts tokens from the prompt "
            "(same output; faster when answers quote their input). Default: off.",
            type=str | None),  # typer takes no Literal: the text goes to DaemonConfig, which names what is valid
        Opt("--draft-tokens", "draft_tokens", "Most tokens drafted per step with --speculative."),
        Opt("--cloud-url", "cloud_url", "Cloud target for what the device cannot serve: any OpenAI-compatible "
            "server or `edge-sdk cloud serve`. Without it everything stays local."),
        Opt("--cloud-key-file", "cloud_api_key", "File holding this device's cloud key.",
            env="EDGE_SDK_CLOUD_KEY_FILE", type=Path | None, default=None, to_field=read_cloud_key),
        Opt("--slo-ms", "slo_ms", "Send a request to the cloud when its estimated local queue wait is longer."),
        Opt("--privacy", "local_only_models",
            "Never send this model's requests to the cloud (repeatable; 'all' for every model)."),
        Opt("--cloud-timeout", "cloud_timeout_s", "Seconds to wait for the cloud's next byte."),
        Opt("--cloud-retries", "cloud_retries", "Retries of a failed cloud call (before its first byte)."),
        Opt("--breaker-failures", "breaker_failures", "Cloud failures in a row that open the breaker."),
        Opt("--breaker-reset", "breaker_reset_s", "Seconds the breaker stays open before a trial."),
        # Jobs, the offline queue and telemetry (README "Jobs and the offline queue").
        Opt("--queue-path", None, "The offline queue (SQLite); default <store>/queue.sqlite or ~/.local/state.",
            type=Path | None, default=None),
        Opt("--no-queue", None, "No offline queue: /v1/jobs answers 503.", type=bool, default=False),
        Opt("--queue-max-items", "queue_max_items", "Waiting items; beyond, new jobs get 507."),
        Opt("--queue-ttl", "queue_ttl_s", "Seconds an item may wait, then expired."),
        Opt("--telemetry-policy", "queue_telemetry_policy", "Telemetry when the queue is full."),
        Opt("--telemetry-interval", "telemetry_interval_s", "Seconds between snapshots; 0: off."),
        Opt("--delivery-concurrency", "delivery_concurrency", "Deliveries in flight at once."),
        Opt("--delivery-max-backoff", "delivery_max_backoff_s", "Longest wait between tries."),
        Opt("--log-level", "log_level", "Least severe log lines shown: debug, info, warning or error.", type=str),
        Opt("--log-format", "log_format", "text, or json: one object a line (time, level, logger, message and the "
            "event's fields) for collectors.", type=str),
        Opt("--device-id", "device_id",
            "Device id sent with telemetry (default: none; the cloud knows the device by its key)."),
    ],
)  # fmt: skip
