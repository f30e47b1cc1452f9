"""`edge-sdk profiles list|show`: the device profiles to convert for, and where each number comes from."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, cast

import typer

from edge_sdk.apps.cli.common import LazyConsole
from edge_sdk.errors import EdgeSDKError

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from device_profiles.schema import DeviceProfile

EXIT_BAD_PROFILE = 2

profiles_app = typer.Typer(
    help="List and show device profiles: shipped boards and phones, 'host' (this machine), or your own YAML file.",
    no_args_is_help=True,
)
console = cast("Console", LazyConsole())
err_console = cast("Console", LazyConsole(stderr=True))


def escape(text: str) -> str:
    from rich.markup import escape as rich_escape  # imported when a profile is shown, not to register commands

    return rich_escape(text)


def _load(ref: str) -> DeviceProfile:
    from device_profiles.loader import load_profile

    try:
        return load_profile(ref)
    except EdgeSDKError as exc:
        # soft_wrap: keep the message (and the list of valid ids) on lines a user can copy.
        err_console.print(f"[bold red]error:[/] [red]{escape(str(exc))}[/]", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_BAD_PROFILE) from None


def _gb(mb: int, unit: bool = True) -> str:
    return f"{mb / 1024:.1f}".removesuffix(".0") + (" GB" if unit else "")


def _num(value: float) -> str:
    return f"{value:g}"


def _join(items: Iterable[str]) -> str:
    return ", ".join(items) or "-"


# One entry a line keeps the list table narrow.
def _accelerators_short(profile: DeviceProfile) -> str:
    return (
        "\n".join(a.kind + (f" {_num(a.tops)} TOPS" if a.tops is not None else "") for a in profile.accelerators) or "-"
    )


def _backends_short(profile: DeviceProfile) -> str:
    return "\n".join(b.value for b in profile.backends if profile.supports(b)) or "-"


# (header, cell, numeric, only on a wide terminal). Units sit in stacked headers to keep number columns narrow.
_LIST_COLUMNS: list[tuple[str, Callable[[DeviceProfile], str], bool, bool]] = [
    ("id", lambda p: escape(p.id), False, False),
    ("name", lambda p: escape(p.name), False, True),
    ("class", lambda p: p.device_class.value, False, False),
    ("CPU", lambda p: escape(p.cpu.model), False, True),
    ("cores", lambda p: str(p.cpu.cores), True, False),
    ("RAM\nGB", lambda p: _gb(p.memory.total_mb, unit=False), True, False),
    ("model\nbudget\nGB", lambda p: _gb(p.memory.budget_mb, unit=False), True, False),
    ("bandwidth\nGB/s", lambda p: _num(p.memory.bandwidth_gbps), True, False),
    ("accelerators", _accelerators_short, False, True),
    ("backends", _backends_short, False, False),
]
WIDE_TERMINAL = 120  # below this, name/CPU/accelerators wrap into unreadable slivers: leave them to `show`


@profiles_app.command("list")
def list_cmd() -> None:
    """One row a profile: CPU, memory and the model budget, accelerators, backends. 'host' is measured now."""
    from rich import box
    from rich.table import Table

    from device_profiles.loader import profile_ids

    profiles = [_load(profile_id) for profile_id in profile_ids()]
    wide = console.width >= WIDE_TERMINAL
    columns = [c for c in _LIST_COLUMNS if wide or not c[3]]
    table = Table(title="Device profiles", box=box.SIMPLE_HEAVY, pad_edge=False)
    for header, _, numeric, _ in columns:
        # The id is what the user types next: never wrap or shorten it.
        table.add_column(header, justify="right" if numeric else "left", no_wrap=numeric or header == "id")
    for p in profiles:
        table.add_row(*(cell(p) for _, cell, _, _ in columns))
    console.print(table)
    if not wide:
        console.print(f"(name, CPU and accelerators need a {WIDE_TERMINAL}-column terminal)", style="dim")
    console.print("Details and sources: [bold]edge-sdk profiles show ID[/]. A YAML path works wherever an id does.")


def _section(title: str, rows: Iterable[tuple[str, str]], source: str | None = None) -> Table:
    from rich import box
    from rich.table import Table

    table = Table(title=title, title_justify="left", title_style="bold", show_header=False, box=box.SIMPLE)
    table.add_column(style="cyan", no_wrap=True)
    table.add_column(overflow="fold")
    for key, value in rows:
        table.add_row(key, escape(value))
    if source is not None:
        table.add_row("source", f"[dim]{escape(source)}[/]")
    return table


def _views(p: DeviceProfile) -> list[Table]:
    cpu, mem = p.cpu, p.memory
    views = [
        _section(
            "CPU",
            [
                ("model", cpu.model),
                ("arch", cpu.arch),
                ("cores", str(cpu.cores)),
                ("max frequency", f"{_num(cpu.max_freq_ghz)} GHz"),
                ("features", _join(cpu.features)),
            ],
            cpu.source,
        ),
        _section(
            "Memory",
            [
                ("total", f"{_gb(mem.total_mb)} ({mem.total_mb} MB)"),
                ("model budget", f"{_gb(mem.budget_mb)} ({mem.budget_mb} MB)"),
                ("bandwidth", f"{_num(mem.bandwidth_gbps)} GB/s"),
            ],
            mem.source,
        ),
    ]
    if not p.accelerators:
        views.append(_section("Accelerators", [("-", "none listed")]))
    for i, acc in enumerate(p.accelerators, 1):
        rows = [("kind", acc.kind), ("name", acc.name)]
        rows.append(("int8 TOPS", _num(acc.tops) if acc.tops is not None else "not published"))
        rows.append(("memory", "shared with the CPU" if acc.shared_memory else "dedicated"))
        views.append(_section(f"Accelerator {i}/{len(p.accelerators)}", rows, acc.source))
    views.append(_section("Storage", [("kind", p.storage.kind), ("size", f"{p.storage.size_gb} GB")], p.storage.source))
    views.append(_section("OS", [("name", p.os.name), ("version", p.os.version)]))
    views.append(
        _section(
            "Power", [("typical", f"{_num(p.power.typical_w)} W"), ("max", f"{_num(p.power.max_w)} W")], p.power.source
        )
    )
    return views


def _backends_table(p: DeviceProfile) -> Table:
    from rich import box
    from rich.table import Table

    table = Table(title="Backends", title_justify="left", title_style="bold", box=box.SIMPLE)
    for name in ("backend", "supported", "runtime", "targets", "notes"):
        table.add_column(name, overflow="fold")
    for backend, support in p.backends.items():
        table.add_row(
            backend.value,
            "[green]yes[/]" if support.supported else "[red]no[/]",
            escape(support.runtime_version or "-"),
            escape(_join(support.targets)),
            escape(support.notes or ""),
        )
    return table


@profiles_app.command("show")
def show_cmd(
    profile: str = typer.Argument(help="A profile id (see `edge-sdk profiles list`) or the path of a YAML file."),
) -> None:
    """Every section of one profile, with the datasheet or measurement each number comes from."""
    from rich.console import Group
    from rich.panel import Panel

    p = _load(profile)
    title = f"[bold]{escape(p.name)}[/]  id [cyan]{escape(p.id)}[/]  class {p.device_class.value}"
    console.print(Panel(Group(*_views(p), _backends_table(p)), title=title, title_align="left"))
