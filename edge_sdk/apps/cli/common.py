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

# The CLI's modules import numpy, the bundle models and the engines inside the commands that use them, never at
# the top: `edge-sdk --help` then starts in a fraction of a second (tests/apps/cli/test_cli_startup.py).


class LazyConsole:
    """A rich Console made when first used: importing rich's console costs about as much as typer itself, and
    `edge-sdk models` on an empty store, or any command that fails early, should not pay for it."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._console: Console | None = None

    def _real(self) -> Console:
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._options)
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real(), name)

    # Dunder methods are looked up on the type, not through __getattr__: rich's Live and Progress use these.
    def __enter__(self) -> Console:
        return self._real().__enter__()

    def __exit__(self, *exc: Any) -> None:
        self._real().__exit__(*exc)


console = cast("Console", LazyConsole())
err_console = cast("Console", LazyConsole(stderr=True))

EXIT_FAILED = 1  # the command ran and the answer is "no" (bundle invalid, accuracy gate failed, ...)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Show an EdgeSDKError as one red message instead of a traceback, and exit non-zero."""
    try:
        yield
    except EdgeSDKError as exc:
        from rich.markup import escape

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


def human_bytes(n: int) -> str:
    from device_profiles.fit import human  # one formatter for the CLI and the fit reasons it shows

    return human(n)
