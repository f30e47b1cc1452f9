"""What every command shares: one console, turning library errors into a message and an exit code."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import typer

from edge_sdk.errors import EdgeSDKError

if TYPE_CHECKING:
    import numpy as np
    from rich.console import Console

# The CLI's modules import numpy, rich's tables and progress bars, the bundle models and the engines inside the
# commands that use them, never at the top: `edge-sdk --help` and `edge-sdk models` then start about as fast as
# a bare Typer app (tests/apps/cli/test_cli_startup.py, benchmarks/cli_startup.py).


class LazyConsole:
    """A rich Console made when first used: importing rich's console costs about as much as typer itself, and a
    one-line answer, or a command that fails early, should not pay for it. Everything else is the Console's."""

    __slots__ = ("_console", "_options")

    def __init__(self, **options: Any) -> None:
        object.__setattr__(self, "_options", options)
        object.__setattr__(self, "_console", None)

    def _real(self) -> Console:
        if self._console is None:
            from rich.console import Console

            object.__setattr__(self, "_console", Console(**self._options))
        return cast("Console", self._console)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real(), name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._real(), name, value)

    # Special methods are looked up on the type, not through __getattr__: rich's Live and Progress use these.
    def __enter__(self) -> Console:
        return self._real().__enter__()

    def __exit__(self, *exc: Any) -> None:
        self._real().__exit__(*exc)


console = cast("Console", LazyConsole())
err_console = cast("Console", LazyConsole(stderr=True))


def escape(text: str) -> str:
    """rich's markup escape, imported when something is printed."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


EXIT_FAILED = 1  # the command ran and the answer is "no" (bundle invalid, accuracy gate failed, ...)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Show an EdgeSDKError as one red message instead of a traceback, and exit non-zero."""
    try:
        yield
    except EdgeSDKError as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        raise typer.Exit(EXIT_FAILED) from None


MAX_TEMPLATE_BYTES = 1024 * 1024


def read_chat_template(path: Path) -> str:
    """A --chat-template file, refused unless it renders a short conversation in the chat sandbox."""
    from edge_sdk.errors import ConfigError
    from runtimes.llama_cpp_adapter import check_chat_template

    if not path.is_file():
        raise ConfigError(f"chat template file {str(path)!r} does not exist")
    if path.stat().st_size > MAX_TEMPLATE_BYTES:
        raise ConfigError(f"chat template file {str(path)!r} is over {MAX_TEMPLATE_BYTES} bytes")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"chat template file {str(path)!r} is not UTF-8 text: {exc}") from None
    return check_chat_template(text)


def load_npz(path: Path, what: str) -> dict[str, np.ndarray]:
    import numpy as np

    from edge_sdk.errors import ConfigError

    if not path.is_file():
        raise ConfigError(f"{what} file {str(path)!r} does not exist")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{what} file {str(path)!r} is not a readable .npz of arrays: {exc}") from None


def parse_share(text: str, option: str = "--max-accuracy-drop") -> float:
    """A share written as a percentage or a fraction, the same in every command: '1%' -> 0.01, '0.01' -> 0.01."""
    from edge_sdk.errors import ConfigError

    raw = text.strip()
    try:
        share = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise ConfigError(f"{option} {text!r} is not a share; write it as 1% or 0.01") from None
    if not 0 <= share <= 1:
        raise ConfigError(f"{option} {text!r} is outside 0..1 (0%..100%)")
    return share


def human_bytes(n: int) -> str:
    from device_profiles.fit import human  # one formatter for the CLI and the fit reasons it shows

    return human(n)


def write_page(path: Path, page: str) -> None:
    """Write an HTML report (whole or not at all: a reader never sees half a page) and say where."""
    from edge_sdk.errors import ConfigError

    if path.is_dir():
        raise ConfigError(f"cannot write the HTML report to {str(path)!r}: it is a directory; give a file name")
    partial = path.with_name(f".{path.name}.partial")
    try:
        partial.write_text(page, encoding="utf-8")
        partial.replace(path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise ConfigError(f"cannot write the HTML report to {str(path)!r}: {exc.strerror}") from None
    err_console.print(f"[green]wrote[/] {escape(str(path))}")  # stderr: stdout may be a --json document


JSON_OPT_HELP = "Print the result as one JSON document on stdout (shape: README, 'JSON output'); nothing else there."


def json_option(help_text: str = JSON_OPT_HELP) -> Any:
    return typer.Option(False, "--json", help=help_text)


def print_json(document: object) -> None:
    """The one JSON document a `--json` command prints: indented, UTF-8, nothing else on stdout. NaN and
    infinities (a model's outputs may hold them) become null: JSON has no such numbers."""
    import json

    typer.echo(json.dumps(_finite(document), indent=2, ensure_ascii=False, default=str, allow_nan=False))


def _finite(value: object) -> object:
    import math

    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def transfer_columns() -> tuple[Any, ...]:
    """Bytes done / total and speed for a progress bar, in the binary units every other output uses."""
    from rich.progress import DownloadColumn, ProgressColumn, Task
    from rich.text import Text

    class BinarySpeedColumn(ProgressColumn):  # rich's TransferSpeedColumn is decimal (kB/s) only
        def render(self, task: Task) -> Text:
            speed = task.finished_speed or task.speed
            return Text("?" if speed is None else f"{human_bytes(int(speed))}/s", style="progress.data.speed")

    return DownloadColumn(binary_units=True), BinarySpeedColumn()


@contextlib.contextmanager
def human_lines_to_stderr(enabled: bool = True) -> Iterator[None]:
    """With --json: what the command would tell a person (progress, golden checks) goes to stderr, so stdout
    holds the JSON document only."""
    import sys

    if not enabled:
        yield
        return
    # rich's `file` falls back to whatever sys.stdout is at each print; restore that fallback, not today's stdout
    previous = console._file
    console.file = sys.stderr
    try:
        yield
    finally:
        console._file = previous


def complete_profile(incomplete: str) -> list[str]:
    """Shell completion of a profile id (a YAML path completes as a file name in the shell)."""
    from device_profiles.loader import profile_ids

    return [p for p in profile_ids() if p.startswith(incomplete)]
