"""Commands imported when they are used: `edge-sdk --help` lists every command without importing one.

The root group knows each command by its name and where it lives (`"module:attribute"`, a command function or a
Typer app). Its `--help` lists them with the first paragraph of their help read from `listing.json`, which is
generated from the real commands (`EDGE_SDK_UPDATE_SURFACE=1`, checked by tests/apps/cli/test_cli_startup.py).
Running a command, completing it or asking for its own help imports its module and builds it exactly as
`app.command(name)(fn)` or `app.add_typer(sub, name=..., help=...)` would, tidy help included.

Why: a command's module imports what its options need (the serve options are a pydantic model's fields), and
importing all of them to print a list of names took most of a second, several on a Raspberry Pi.
"""

from __future__ import annotations

import importlib
import inspect
import json
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import typer
from typer.core import TyperCommand, TyperGroup

from edge_sdk.apps.cli.helptext import TidyGroup, tidy

LISTING = Path(__file__).with_name("listing.json")


@dataclass(frozen=True)
class Entry:
    """One command of a lazy group: its name, `module:attribute` (a function or a Typer app) and, for an app,
    the help the group shows for it when it differs from the app's own."""

    name: str
    target: str
    help: str | None = None

    def build(self) -> Any:
        """The click command, made as the eager `app.command` / `app.add_typer` registration makes it."""
        module, _, attribute = self.target.partition(":")
        obj = getattr(importlib.import_module(module), attribute)
        holder = typer.Typer()
        if isinstance(obj, typer.Typer) and self.help:
            holder.add_typer(obj, name=self.name, help=self.help)
        elif isinstance(obj, typer.Typer):
            holder.add_typer(obj, name=self.name)
        else:
            holder.command(self.name)(obj)
        holder.callback()(lambda: None)  # a callback makes typer build a group even around one command
        group = typer.main.get_group(tidy(holder))
        return group.commands[self.name]


class LazyCommands(MutableMapping[str, Any]):
    """A group's `commands`: every name known at once, each command built the first time it is looked up."""

    def __init__(self, entries: tuple[Entry, ...]) -> None:
        self._entries = {entry.name: entry for entry in entries}
        self._built: dict[str, Any] = {}

    def built(self, name: str) -> bool:
        return name in self._built

    def __getitem__(self, name: str) -> Any:
        if name not in self._built:
            self._built[name] = self._entries[name].build()
        return self._built[name]

    def __setitem__(self, name: str, command: Any) -> None:  # click's add_command
        self._entries.setdefault(name, Entry(name, ""))
        self._built[name] = command

    def __delitem__(self, name: str) -> None:
        del self._entries[name]
        self._built.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries


class LazyGroup(TidyGroup):
    """A TidyGroup over `entries`; its own help lists commands from `listing.json` without building them."""

    # set by a subclass: typer makes the group itself, with arguments of its own
    entries: ClassVar[tuple[Entry, ...]] = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        lazy = LazyCommands(self.entries)
        for name, command in self.commands.items():  # registered the usual way (`app.command`): kept as built
            lazy[name] = command
        self.commands: MutableMapping[str, Any] = lazy
        self._listing = False

    def list_commands(self, ctx: Any) -> list[str]:
        return list(self.commands)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        commands = self.commands
        if self._listing and isinstance(commands, LazyCommands) and not commands.built(cmd_name):
            text = read_listing().get(cmd_name)
            if text is not None:  # a stand-in with what the list shows; without the file: the real command
                return TyperCommand(cmd_name, help=text)
        return commands.get(cmd_name)

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self._listing = True  # the command list needs names and help only
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False


_cache: dict[str, str] | None = None


def read_listing() -> dict[str, str]:
    global _cache
    if _cache is None:
        try:
            _cache = json.loads(LISTING.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            _cache = {}  # an install without the file lists by building: slower, still right
    return _cache


def listing_of(group: TyperGroup, ctx: Any) -> dict[str, str]:
    """What `listing.json` should hold for `group`: each visible command's first help paragraph, in order."""
    found: dict[str, str] = {}
    for name in group.list_commands(ctx):
        command = group.commands[name]
        if command.hidden:
            continue
        found[name] = inspect.cleandoc(command.short_help or command.help or "").split("\n\n")[0]
    return found
