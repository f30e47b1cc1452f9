"""What every command shares: one console, turning library errors into a message and an exit code."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.markup import escape

from edge_sdk.errors import EdgeSDKError

if TYPE_CHECKING:
    import numpy as np

# The CLI's modules import numpy, the bundle models and the engines inside the commands that use them, never at
# the top: `edge-sdk --help` then starts in a fraction of a second (tests/apps/cli/test_cli_startup.py).
console = Console()
err_console = Console(stderr=True)

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


def human_bytes(n: int) -> str:
    from device_profiles.fit import human  # one formatter for the CLI and the fit reasons it shows

    return human(n)
