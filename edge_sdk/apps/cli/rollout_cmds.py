"""`edge-sdk cloud rollout | rollouts | devices`: staged rollouts to device groups, steered from anywhere."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from edge_sdk.apps.cli.common import console, user_errors
from edge_sdk.errors import ConfigError

GATEWAY_HELP = "The gateway's URL, e.g. http://gateway:8090."
PUBLISHER_KEY_HELP = "File holding a publisher key of the gateway (sent as Authorization: Bearer)."
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str, option: str) -> float:
    """'10m' -> 600.0; '90s', '24h', '1d', or plain seconds."""
    raw = text.strip().lower()
    try:
        value = float(raw[:-1]) * _UNITS[raw[-1]] if raw and raw[-1] in _UNITS else float(raw)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise ConfigError(f"{option} {text!r}: give a positive duration such as 90s, 10m, 24h or 1d")
    return value


def parse_share(text: str, option: str) -> float:
    """'95%' -> 0.95; '0.95' -> 0.95."""
    raw = text.strip()
    try:
        return float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise ConfigError(f"{option} {text!r}: give a share such as 95% or 0.95") from None


def parse_stages(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--stages {text!r}: give increasing percentages ending at 100, e.g. 5,25,100") from None


def _client(url: str, key_file: Path) -> Any:
    from cloud_sync.fleet_client import FleetClient
    from edge_sdk.apps.daemon.server import read_cloud_key

    return FleetClient(url, api_key=read_cloud_key(key_file))


def _when(at: float | None) -> str:
    if at is None:
        return "never"
    ago = max(0.0, time.time() - at)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if ago >= size:
            return f"{ago / size:.0f}{unit} ago"
    return f"{ago:.0f}s ago"


def _show(rollout: dict[str, Any]) -> None:
    stages = ",".join(str(s) for s in rollout["stages"])
    console.print(
        f"rollout {rollout['id']}: {rollout['model']} {rollout['version']} to group {rollout['group']} "
        f"[bold]{rollout['state']}[/] at {rollout['stage_percent']}% (stages {stages}); "
        f"{rollout['healthy']}/{rollout['members']} healthy, {rollout['pending']} pending",
        highlight=False,
    )
    console.print(f"  {escape(rollout['reason'])}", highlight=False)
    for reason in rollout.get("device_reasons", []):
        console.print(f"  - {escape(reason)}", highlight=False)


def rollout_cmd(
    name: str = typer.Argument(..., help="Model name, as published in the registry."),
    version: str = typer.Argument(..., help="The published version to roll out."),
    group: str = typer.Option(..., "--group", help="Device group (from the device key file or `cloud devices`)."),
    stages: str = typer.Option("5,25,100", "--stages", help="Percentages of the group, increasing, ending at 100."),
    min_healthy: str = typer.Option(
        "95%", "--min-healthy", help="Share of a stage's devices that must be healthy to open the next stage."
    ),
    stage_wait: str = typer.Option(
        "10m", "--stage-wait", help="How long a stage's devices have to report before they count unhealthy."
    ),
    seen_within: str = typer.Option(
        "24h", "--seen-within", help="A group's devices are those seen within this long (the stages' denominator)."
    ),
    max_error_rate: str = typer.Option("5%", "--max-error-rate", help="A healthy device's 5xx share of requests."),
    max_fallback_rate: str = typer.Option(
        "25%", "--max-fallback-rate", help="A healthy device's share of requests it had to send to the cloud."
    ),
    to: str = typer.Option(..., "--to", help=GATEWAY_HELP),
    key_file: Path = typer.Option(..., "--key-file", help=PUBLISHER_KEY_HELP),
) -> None:
    """Open a published version to a growing share of a device group. A stage's devices (by a stable hash of
    their id) may sync it; the next stage opens when enough of them report it installed, their daemon ready and
    their error and cloud-fallback rates in bounds; otherwise the rollout aborts and they roll back on sync."""
    with user_errors():
        spec = {
            "model": name,
            "version": version,
            "group": group,
            "stages": parse_stages(stages),
            "min_healthy": parse_share(min_healthy, "--min-healthy"),
            "stage_wait_s": parse_duration(stage_wait, "--stage-wait"),
            "seen_within_s": parse_duration(seen_within, "--seen-within"),
            "max_error_rate": parse_share(max_error_rate, "--max-error-rate"),
            "max_fallback_rate": parse_share(max_fallback_rate, "--max-fallback-rate"),
        }
        with _client(to, key_file) as client:
            rollout = client.start_rollout(spec)
    _show(rollout)


rollouts_app = typer.Typer(
    help="Staged rollouts: list them (the default), show one, pause, resume or abort.", invoke_without_command=True
)
_TO = typer.Option(..., "--to", help=GATEWAY_HELP)
_KEY = typer.Option(..., "--key-file", help=PUBLISHER_KEY_HELP)
# a group that lists by default takes these on itself, so they are optional there (a subcommand has its own)
_LIST_TO = typer.Option(None, "--to", help=GATEWAY_HELP)
_LIST_KEY = typer.Option(None, "--key-file", help=PUBLISHER_KEY_HELP)


def _list_by_default(
    ctx: typer.Context,
    to: str | None,
    key_file: Path | None,
    as_json: bool,
    fetch: Callable[[Any], list[dict[str, Any]]],
    draw: Callable[[list[dict[str, Any]]], None],
) -> None:
    """A command group run without a subcommand: fetch its list from the gateway, print it as JSON or drawn."""
    if ctx.invoked_subcommand is not None:
        return
    with user_errors():
        if to is None or key_file is None:
            raise ConfigError("give --to URL and --key-file FILE (a publisher key)")
        with _client(to, key_file) as client:
            items = fetch(client)
    if as_json:
        typer.echo(json.dumps(items, indent=2))
    else:
        draw(items)


@rollouts_app.callback()
def rollouts_cmd(
    ctx: typer.Context,
    to: str = _LIST_TO,
    key_file: Path = _LIST_KEY,
    as_json: bool = typer.Option(False, "--json", help="Print the rollouts as JSON."),
) -> None:
    """Each rollout's stage, counts and reasons."""
    _list_by_default(ctx, to, key_file, as_json, lambda client: client.rollouts(), _draw_rollouts)


def _draw_rollouts(rollouts: list[dict[str, Any]]) -> None:
    if not rollouts:
        console.print("no rollouts", highlight=False)
        return
    table = Table("id", "model", "version", "group", "state", "stage", "healthy", "reason")
    for r in rollouts:
        table.add_row(
            str(r["id"]),
            r["model"],
            r["version"],
            r["group"],
            r["state"],
            f"{r['stage_percent']}%",
            f"{r['healthy']}/{r['members']}",
            escape(r["reason"]),
        )
    console.print(table)


@rollouts_app.command("show")
def show_cmd(
    rollout_id: int = typer.Argument(..., help="The rollout's id."), to: str = _TO, key_file: Path = _KEY
) -> None:
    """One rollout and every decision taken on it."""
    with user_errors(), _client(to, key_file) as client:
        rollout = client.rollout(rollout_id)
    _show(rollout)
    for d in rollout["decisions"]:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(d["at"]))
        console.print(f"  {stamp} {d['action']} at {d['stage_percent']}%: {escape(d['reason'])}", highlight=False)


def _control(action: str) -> Any:
    def command(
        rollout_id: int = typer.Argument(..., help="The rollout's id."),
        reason: str = typer.Option("", "--reason", help="Why, for the rollout's log."),
        to: str = _TO,
        key_file: Path = _KEY,
    ) -> None:
        with user_errors(), _client(to, key_file) as client:
            rollout = client.control(rollout_id, action, reason)
        _show(rollout)

    command.__doc__ = {
        "pause": "Stop opening stages (devices already in the stage keep the version).",
        "resume": "Resume a paused rollout; its stage's wait starts again.",
        "abort": "Abort: the version is withdrawn from the group and devices running it roll back on sync.",
    }[action]
    return command


for _action in ("pause", "resume", "abort"):
    rollouts_app.command(_action)(_control(_action))


devices_app = typer.Typer(help="The gateway's devices: groups and last seen (list by default; set-groups).",
                          invoke_without_command=True)  # fmt: skip


@devices_app.callback()
def devices_cmd(
    ctx: typer.Context,
    to: str = _LIST_TO,
    key_file: Path = _LIST_KEY,
    as_json: bool = typer.Option(False, "--json", help="Print the devices as JSON."),
) -> None:
    """Every device of the gateway, its groups and when it last called."""
    _list_by_default(ctx, to, key_file, as_json, lambda client: client.devices(), _draw_devices)


def _draw_devices(devices: list[dict[str, Any]]) -> None:
    table = Table("device", "groups", "last seen")
    for d in devices:
        table.add_row(d["id"], ",".join(d["groups"]) or "-", _when(d["last_seen"]))
    console.print(table)


@devices_app.command("set-groups")
def set_groups_cmd(
    device: str = typer.Argument(..., help="The device's id."),
    groups: str = typer.Argument(..., help="Comma-separated groups ('' for none); replaces the key file's."),
    to: str = _TO,
    key_file: Path = _KEY,
) -> None:
    """Put a device into groups (stored at the gateway; overrides the key file's groups)."""
    with user_errors(), _client(to, key_file) as client:
        result = client.set_groups(device, [g for g in groups.split(",") if g])
    console.print(f"{result['id']}: groups {','.join(result['groups']) or '(none)'}", highlight=False)
