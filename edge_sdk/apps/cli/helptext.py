"""Clean `--help` for every command: conventional placeholders, whole sentences, no type-annotation leaks.

typer 0.2x shows each option's Python type (`<bool>` after a flag, `<list[Path]>`) and keeps a docstring's
line breaks mid-sentence. `tidy(app)` gives every command of the app (and its sub-apps) a command class that
shows PATH / TEXT / INTEGER / NUMBER placeholders (nothing after a flag), names arguments in capitals
(`BUNDLE`), and joins the lines of each help paragraph so the terminal wraps them at its own width.
"""

from __future__ import annotations

import re
import typing
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup
from typer.models import DefaultPlaceholder

_PLACEHOLDERS = {bool: "BOOLEAN", int: "INTEGER", float: "NUMBER", str: "TEXT"}


def reflow(text: str | None) -> str | None:
    """Join the lines of each paragraph (paragraphs are separated by a blank line)."""
    if not text:
        return text
    import inspect

    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(re.sub(r"\s*\n\s*", " ", p.strip()) for p in paragraphs)


def _placeholder(param: Any) -> str:
    if getattr(param, "is_flag", False):
        return ""  # a switch takes no value
    desc = param.type_descriptor
    if desc.is_choice:
        return "|".join(str(getattr(c, "value", c)) for c in desc.choices or ())
    if desc.is_path:
        return "PATH"
    annotation = desc.annotation
    args = typing.get_args(annotation)
    if desc.is_list and args:
        annotation = args[0]
    if annotation is Path:
        return "PATH"
    return _PLACEHOLDERS.get(annotation, getattr(annotation, "__name__", "VALUE").upper())


def _tidy_params(params: list[Any]) -> list[Any]:
    for param in params:
        if param.param_type_name == "argument":
            if param.metavar is None:
                param.metavar = (param.name or "value").upper()
            kind = _placeholder(param) + ("..." if param.nargs != 1 else "")
            param.display_type_rich = lambda ctx, kind=kind: kind  # not typer's <list[Path]>, nor <str>
        elif param.metavar is None:
            param.metavar = _placeholder(param)
    return params


class TidyCommand(TyperCommand):
    def __init__(self, *args: Any, help: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, help=reflow(help), **kwargs)

    def get_params(self, ctx: Any) -> list[Any]:
        return _tidy_params(super().get_params(ctx))

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        """`[OPTIONS] BUNDLE [MORE]...`: a required argument plain, an optional one in brackets."""
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                name = param.metavar if param.required else f"[{param.metavar}]"
                pieces.append(name + ("..." if param.nargs != 1 else ""))
        return pieces


class TidyGroup(TyperGroup):
    def __init__(self, *args: Any, help: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, help=reflow(help), **kwargs)

    def get_params(self, ctx: Any) -> list[Any]:
        return _tidy_params(super().get_params(ctx))


def _default(cls: Any, typer_class: type) -> bool:
    return cls is None or cls is typer_class or isinstance(cls, DefaultPlaceholder)


def tidy(app: typer.Typer) -> typer.Typer:
    """Give every command and group of `app` the tidy classes (before typer builds them)."""
    if _default(app.info.cls, TyperGroup):  # typer fills in its own classes: replace them, keep a custom one
        app.info.cls = TidyGroup
    for command in app.registered_commands:
        if _default(command.cls, TyperCommand):
            command.cls = TidyCommand
    for group in app.registered_groups:
        if _default(group.cls, TyperGroup):
            group.cls = TidyGroup
        if group.typer_instance is not None:
            tidy(group.typer_instance)
    return app
