"""`edge-sdk flash`: push a verified bundle onto boards over SSH or onto a mounted card, several at once."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from edge_sdk.apps.cli.common import EXIT_FAILED, console, err_console, human_bytes, user_errors
from edge_sdk.errors import ConfigError

if TYPE_CHECKING:
    from rich.progress import TaskID

    from edge_sdk.apps.flash import FlashOptions, FlashResult, Release, Stage, Target, TargetPlan


def flash_cmd(
    bundle: Path = typer.Argument(..., help="A bundle directory or .edgebundle file; it is verified here first."),
    to: list[str] = typer.Option(
        [], "--to", help="ssh://user@host[:port]/store/path or dir:///mounted/card/store; repeatable."
    ),
    targets_file: Path | None = typer.Option(
        None, "--targets", help="A file of targets, one `URL [PROFILE]` a line (# comments)."
    ),
    profile: str | None = typer.Option(
        None, "--profile", "-p", help="Device profile (id or YAML) of the --to targets, for the fit check."
    ),
    activate: bool = typer.Option(False, "--activate", help="Make the new version the active one on the device."),
    identity: Path | None = typer.Option(None, "--identity", "-i", help="SSH private key (default: agent, ~/.ssh)."),
    known_hosts: Path | None = typer.Option(
        None, "--known-hosts", help="known_hosts file to check boards against (default ~/.ssh/known_hosts)."
    ),
    accept_new_host_key: bool = typer.Option(
        False,
        "--accept-new-host-key",
        help="Trust a new board's host key on first use and pin it (one line appended to known_hosts).",
    ),
    trust: list[Path] = typer.Option(
        [], "--trust", help="Public key the bundle must be signed by: checked here, then again on the device."
    ),
    device_trust: list[str] = typer.Option(
        [], "--device-trust", help="Path of a public key already on the board that the bundle must be signed by."
    ),
    health_url: str | None = typer.Option(
        None,
        "--health-url",
        help="After --activate, GET this URL as the board sees it (e.g. http://127.0.0.1:8080/health/ready) "
        "until it answers 2xx; otherwise roll back to the previous version.",
    ),
    health_timeout: float = typer.Option(30.0, "--health-timeout", help="Seconds the health check may take."),
    remote_edge_sdk: str = typer.Option(
        "edge-sdk",
        "--remote-edge-sdk",
        help="The command that runs edge-sdk on the board, e.g. /opt/edge/bin/edge-sdk.",
    ),
    no_device_check: bool = typer.Option(
        False, "--no-device-check", help="Skip re-running the golden set on the device (digests are still checked)."
    ),
    allow_downgrade: bool = typer.Option(False, "--allow-downgrade", help="Accept a version older than the active."),
    parallel: int = typer.Option(4, "--parallel", help="Boards flashed at once."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print what would happen, with the fit check; change nothing."
    ),
) -> None:
    """Copy a bundle onto boards (resuming an interrupted copy), verify it there (digests, signature, golden set),
    install it into the device's store as a new version, and optionally activate it and check the daemon's
    health, rolling back when that fails. Boards are flashed in parallel; a summary says what worked where."""
    from edge_sdk.apps.flash import FlashOptions, parse_target, plan_target, prepare, read_targets, survey

    with user_errors(), tempfile.TemporaryDirectory(prefix="edge-flash-") as work:
        targets = [parse_target(url, profile) for url in to]
        if targets_file is not None:
            targets += read_targets(targets_file)
        if not targets:
            raise ConfigError("name at least one board: --to ssh://user@host/store/path, or --targets FILE")
        labels = [t.label for t in targets]
        if len(set(labels)) != len(labels):
            twice = sorted({label for label in labels if labels.count(label) > 1})
            raise ConfigError(f"targets named more than once (two copies into one store collide): {twice}")
        options = FlashOptions(
            activate=activate,
            trust=tuple(trust),
            device_trust=tuple(device_trust),
            identity=identity,
            known_hosts=known_hosts,
            accept_new_host=accept_new_host_key,
            remote_cmd=remote_edge_sdk,
            health_url=health_url,
            health_timeout_s=health_timeout,
            device_check=not no_device_check,
            allow_downgrade=allow_downgrade,
            parallel=parallel,
        )
        with console.status(f"verifying {bundle}"):
            release = prepare(bundle, Path(work), trust)
        m = release.manifest
        signed = f", signature checked against {len(trust)} key(s)" if trust else ""
        console.print(
            f"{m.name} {m.version}: {len(m.variants)} variant(s), {human_bytes(release.size)}, "
            f"sha256 {release.sha256[:16]}…{signed}",
            highlight=False,
        )
        if dry_run:
            trusted = len(trust) + len(device_trust)
            with console.status("asking the boards what they hold (read only)"):
                boards = survey(release, targets, options)
            for target, board in zip(targets, boards, strict=True):
                plan = plan_target(
                    release.bundle,
                    target,
                    activate=activate,
                    health_url=health_url,
                    trusted=trusted,
                    device_check=not no_device_check,
                )
                _print_plan(plan, board)
            console.print("[dim]dry run: nothing was copied or changed[/]")
            return
        try:
            results = _flash_with_progress(release, targets, options)
        except KeyboardInterrupt:
            err_console.print("cancelled: nothing half-installed; partial copies stay and the next flash resumes them")
            raise typer.Exit(130) from None
    _print_summary(results)
    if not all(r.ok for r in results):
        raise typer.Exit(EXIT_FAILED)


def _flash_with_progress(release: Release, targets: Sequence[Target], options: FlashOptions) -> list[FlashResult]:
    from rich.markup import escape
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    from edge_sdk.apps.flash import flash_many

    columns = (
        TextColumn("{task.fields[label]}"),
        TextColumn("[cyan]{task.fields[stage]:>7}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        tasks: dict[str, TaskID] = {
            t.label: progress.add_task("", total=release.size, label=escape(t.label), stage="waiting") for t in targets
        }

        def on_event(target: Target, stage: Stage, done: int, total: int) -> None:
            progress.update(tasks[target.label], completed=done, total=total, stage=stage.value)

        return flash_many(release, targets, options, on_event)


def _print_plan(plan: TargetPlan, board: list[str]) -> None:
    from rich.markup import escape

    target = plan.target
    console.print(f"\n[bold]{escape(target.label)}[/]" + (f" (profile {target.profile})" if target.profile else ""))
    for line in board:
        console.print(f"  {escape(line)}", highlight=False)
    for i, step in enumerate(plan.steps, 1):
        console.print(f"  {i}. {escape(step)}", highlight=False)
    if not plan.fit:
        console.print("  fit: [dim]no profile for this target (give one with --profile or in the targets file)[/]")
        return
    for variant_id, report in plan.fit:
        mb = 1024 * 1024
        size = f"{report.estimated_peak_bytes / mb:.1f} MB of {report.budget_bytes / mb:.0f} MB"
        verdict = "[green]fits[/]" if report.fits else f"[red]does not fit[/]: {escape('; '.join(report.reasons))}"
        console.print(f"  fit {variant_id}: {verdict} ({size})", highlight=False)
    if not plan.fits:
        console.print(f"  [red]would be skipped: no variant fits {target.profile}[/]")


def _print_summary(results: Sequence[FlashResult]) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="flash summary")
    for column in ("target", "result", "stage", "sent", "active", "detail"):
        table.add_column(column, overflow="fold")
    for r in results:
        mark = "[green]ok[/]" if r.ok else "[red]failed[/]"
        table.add_row(
            escape(r.target.label),
            mark,
            r.stage.value,
            f"{human_bytes(r.sent_bytes)} of {human_bytes(r.total_bytes)}",
            r.active or "",
            escape(r.message),
        )
    console.print(table)
    failed = sum(not r.ok for r in results)
    console.print(
        f"{len(results) - failed} of {len(results)} board(s) flashed" + (f", {failed} failed" if failed else "")
    )
