"""Command options generated from a config model through one table: one row per flag, its default read from the
model (never written a second time), its TOML key in a `--config` file the flag's own name, some also read from an
`EDGE_SDK_*` environment variable. Precedence: command line > environment > config file > the model's default
(click's own order, with the file as its `default_map`).

    SERVE = OptionTable(DaemonConfig, [
        Opt("--port", "port", "Port to bind.", env="EDGE_SDK_PORT"),
        Opt("--max-body-mb", "max_body_bytes", "Larger bodies get 413.", unit=MiB),
    ])

    @SERVE.command
    def serve_cmd(bundles: list[Path] = typer.Argument(None), **given: Any) -> None:
        settings = SERVE.settings(given)          # {"port": 8080, "max_body_bytes": 8388608, ...}
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

import typer
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from edge_sdk.errors import ConfigError, choices

MiB = 1024 * 1024
_UNSET: Any = object()

CONFIG_ENV = "EDGE_SDK_CONFIG"


@dataclass(frozen=True)
class Opt:
    """One flag. `field` is the config model's field it sets ("daemon.port" for a nested model; None: the command
    uses the value itself). Its type and default come from that field unless given here (`default` only for a flag
    that is not a field, or whose "not given" means something else than the field's default, as a key file)."""

    flag: str
    field: str | None
    help: str = ""
    env: str | None = None
    type: Any = None
    default: Any = _UNSET
    unit: float | None = None  # the flag counts in units of this many of the field's (MiB for *-mb flags)
    to_field: Callable[[Any], Any] | None = None  # the flag's value -> the field's (a key file -> its keys)
    from_field: Callable[[Any], Any] | None = None  # the field's default -> the flag's default

    @property
    def name(self) -> str:
        """The Python parameter name, and with '-' for '_' the key in a config file."""
        return self.flag.split("/")[0].lstrip("-").replace("-", "_")  # "--preload/--no-preload": preload

    @property
    def key(self) -> str:
        return self.flag.split("/")[0].lstrip("-")


@dataclass
class OptionTable:
    model: type[BaseModel]
    rows: Sequence[Opt]
    _by_name: dict[str, Opt] = field(init=False)

    def __post_init__(self) -> None:
        self._by_name = {row.name: row for row in self.rows}
        for row in self.rows:
            if row.field is not None:
                _field_info(self.model, row.field)  # a typo in the table fails at import, not at a user's start

    # ---------------------------------------------------------------- what the flag is
    def default(self, row: Opt) -> Any:
        """The flag's default: the field's, in the flag's units. `...` when the field is required."""
        if row.default is not _UNSET:
            return row.default
        assert row.field is not None, f"{row.flag}: an option that is not a config field needs a default"
        value = _field_default(self.model, row.field)
        if value is PydanticUndefined:
            return ...
        if row.from_field is not None:
            return row.from_field(value)
        if row.unit is not None and value is not None:
            return value / row.unit
        if isinstance(value, frozenset | set | tuple):
            return sorted(value)
        return value

    def flag_type(self, row: Opt) -> Any:
        if row.type is not None:
            return row.type
        assert row.field is not None
        annotation = _field_info(self.model, row.field).annotation
        if row.unit is not None:
            return float | None if _optional(annotation) else float
        origin = get_origin(annotation)
        if origin in (frozenset, set, tuple):
            return list[get_args(annotation)[0]]  # type: ignore[misc]
        return annotation

    def parameter(self, row: Opt) -> inspect.Parameter:
        option = typer.Option(self.default(row), row.flag, help=row.help, envvar=row.env, show_default=True)
        return inspect.Parameter(
            row.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=self.flag_type(row)
        )

    # ---------------------------------------------------------------- a command with these options
    def command(self, fn: Callable[..., None]) -> Callable[..., None]:
        """`fn`'s own parameters, then one per row, then `--config FILE`; `fn` gets the rows' values as **kwargs."""
        resolved = get_type_hints(fn)  # the command's own annotations, evaluated in its module
        own = [
            p.replace(annotation=resolved.get(p.name, p.annotation), kind=inspect.Parameter.POSITIONAL_OR_KEYWORD)
            for p in inspect.signature(fn).parameters.values()
            if p.kind is not inspect.Parameter.VAR_KEYWORD
        ]
        config = inspect.Parameter(
            "config",
            inspect.Parameter.KEYWORD_ONLY,
            annotation=Path | None,
            default=typer.Option(
                None,
                "--config",
                envvar=CONFIG_ENV,
                is_eager=True,  # read before the other options, so its values become their defaults
                callback=self._read_config,
                help="TOML file of options, each named as its flag without '--' (max-body-mb = 16); "
                "flags and EDGE_SDK_* variables override it.",
            ),
        )
        show = inspect.Parameter(
            "print_config",
            inspect.Parameter.KEYWORD_ONLY,
            annotation=bool,
            default=typer.Option(
                False, "--print-config", help="Print the options as resolved (a config file), then exit."
            ),
        )
        params = [*own, *(self.parameter(r) for r in self.rows), config, show]
        hints = {p.name: p.annotation for p in params}

        @functools.wraps(fn)
        def wrapper(**kwargs: Any) -> None:
            kwargs.pop("config", None)
            if kwargs.pop("print_config", False):
                typer.echo(self.as_toml(kwargs), nl=False)
                return
            fn(**kwargs)

        wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = hints
        return wrapper

    def _read_config(self, ctx: typer.Context, path: Path | None) -> Path | None:
        if path is None or ctx.resilient_parsing:
            return path
        try:
            values = read_config_file(path, self)
        except ConfigError as exc:
            raise typer.BadParameter(str(exc)) from None
        params = {p.name: p for p in ctx.command.params}
        for name, value in values.items():  # checked here, so the message names the file, not the flag
            try:
                params[name].process_value(ctx, value)
            except typer.BadParameter as exc:
                raise typer.BadParameter(f"config file {str(path)!r}: {self.row(name).key}: {exc.message}") from None
        ctx.default_map = {**(ctx.default_map or {}), **values}
        return path

    # ---------------------------------------------------------------- the values given -> the model's fields
    def settings(self, given: dict[str, Any]) -> dict[str, Any]:
        """The config model's fields (nested as the model is) from the rows' values; rows without a field are
        left to the command. A None for a flag with a converter means "not given": the field keeps its default."""
        out: dict[str, Any] = {}
        for name, value in given.items():
            row = self._by_name.get(name)
            if row is None or row.field is None:
                continue
            if row.to_field is not None:
                if value is None:
                    continue
                value = row.to_field(value)
            elif row.unit is not None and value is not None:
                value = int(value * row.unit) if _is_int(self.model, row.field) else value * row.unit
            elif isinstance(value, list) and get_origin(_field_info(self.model, row.field).annotation) is frozenset:
                value = frozenset(value)
            *parents, leaf = row.field.split(".")
            target = out
            for part in parents:
                target = target.setdefault(part, {})
            target[leaf] = value
        return out

    def toml_template(self) -> str:
        """Every option as a commented `key = default` line with its help: a config file to start from."""
        lines = []
        for row in self.rows:
            default = self.default(row)
            lines.append(f"# {row.help}" if row.help else f"# {row.flag}")
            shown = "(required)" if default is ... else ("(not set)" if default is None else _toml_value(default))
            env = f"   (env {row.env})" if row.env else ""
            lines.append(f"# {row.key} = {shown}{env}")
        return "\n".join(lines) + "\n"

    def as_toml(self, given: dict[str, Any]) -> str:
        """The rows' values as a config file (unset ones commented)."""
        lines = []
        for row in self.rows:
            value = given.get(row.name)
            if value is None or value is ...:
                lines.append(f"# {row.key} = (not set)")
            else:
                lines.append(f"{row.key} = {_toml_value(value)}")
        return "\n".join(lines) + "\n"

    def keys(self) -> list[str]:
        return [row.key for row in self.rows]

    def row(self, name: str) -> Opt:
        return self._by_name[name]


def on_command_line(ctx: typer.Context, name: str) -> bool:
    """Whether the option `name` was given as a flag (not from the environment, a config file or its default)."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name == "COMMANDLINE"


def read_config_file(path: Path, table: OptionTable) -> dict[str, Any]:
    """A TOML file's options as {parameter name: value}; unknown keys refused naming the valid ones. Relative
    paths are taken from the file's directory (a service's working directory is /)."""
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    import tomllib  # only with --config: not on every command's start

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {exc}") from None
    values: dict[str, Any] = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        row = table._by_name.get(name)
        if row is None:
            raise ConfigError(f"config file {str(path)!r}: unknown option {key!r}; valid: {choices(table.keys())}")
        if isinstance(value, dict):
            raise ConfigError(f"config file {str(path)!r}: {key!r} is a table; give it a value as its flag takes")
        if _is_path(table.flag_type(row)):
            value = [_from(path, v) for v in value] if isinstance(value, list) else _from(path, value)
        values[name] = value
    return values


def _from(config: Path, value: Any) -> Any:
    return str(config.parent / value) if isinstance(value, str) and not Path(value).is_absolute() else value


def _is_path(annotation: Any) -> bool:
    if annotation is Path:
        return True
    return any(_is_path(a) for a in get_args(annotation))


def _optional(annotation: Any) -> bool:
    return get_origin(annotation) in (Union, UnionType) and type(None) in get_args(annotation)


def _resolve(model: type[BaseModel], path: str) -> tuple[Any, Any, str]:
    """(the model class holding the leaf field, that model's default instance or None at the top, the leaf)."""
    *parents, leaf = path.split(".")
    owner: Any = model
    instance: Any = None
    for part in parents:
        instance = (
            owner.model_fields[part].get_default(call_default_factory=True)
            if instance is None
            else (getattr(instance, part))
        )
        owner = type(instance)
    return owner, instance, leaf


def _field_info(model: type[BaseModel], path: str) -> Any:
    owner, _, leaf = _resolve(model, path)
    if leaf not in owner.model_fields:
        raise AssertionError(f"{owner.__name__} has no field {leaf!r} (option table)")
    return owner.model_fields[leaf]


def _field_default(model: type[BaseModel], path: str) -> Any:
    owner, instance, leaf = _resolve(model, path)
    if instance is not None:
        return getattr(instance, leaf)
    return owner.model_fields[leaf].get_default(call_default_factory=True)


def _is_int(model: type[BaseModel], path: str) -> bool:
    annotation = _field_info(model, path).annotation
    return annotation is int or int in get_args(annotation)


def _toml_value(value: Any) -> str:
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, Iterable) and not isinstance(value, str):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(value)
