"""Keeping llama.cpp quiet from any thread, without touching Python's `sys.stdout` and `sys.stderr`.

llama-cpp-python's `verbose=False` wraps backend init and every model load in `suppress_stdout_stderr`, which
replaces the process-wide `sys.stdout`/`sys.stderr` with /dev/null and dup2s file descriptors 1 and 2, then puts
back what it saved. Two threads doing that at once put back each other's /dev/null (llama-cpp-python issue
#1874): the process stays silent for good. And a stream another thread installed meanwhile is dropped: the
daemon preloading a model in a worker thread while a test's CliRunner ran `edge-sdk chat` left `sys.stdout` at the
stream saved before the run, and the runner's own stream, now unreferenced, was closed by the garbage collector.

Here, silencing is per file descriptor, counted and locked: the first thread in redirects the descriptor, the
last one out restores it, and Python's stream objects are never replaced (llama-cpp-python prints nothing itself
with verbose=False; only llama.cpp's C code writes to the descriptors). `use_quiet_loads()` makes
llama-cpp-python use this instead of its own; call it after importing llama_cpp, before constructing `Llama`.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator
from typing import Any


class _Silenced:
    """One file descriptor pointed at /dev/null while at least one caller wants it silent.

    While descriptor 2 is silenced, llama.cpp also logs through its own C logger (into that descriptor) instead of
    llama-cpp-python's Python callback: each call of that callback must take the GIL, and a model load logs ~2,000
    lines, so beside a busy Python thread (the daemon importing its web stack at start, or serving) every line
    waited for it and loading SmolLM2 took 0.4 s (2-5 s beside a busy loop) instead of 0.12 s."""

    def __init__(self, fd: int, *, llama_log: bool = False) -> None:
        self.fd, self._llama_log = fd, llama_log
        self._lock = threading.Lock()
        self._depth = 0
        self._saved: int | None = None

    def enter(self) -> None:
        with self._lock:
            self._depth += 1
            if self._depth > 1:
                return
            for stream in (sys.stdout, sys.stderr):  # what Python buffered belongs to before, not the silence
                with contextlib.suppress(Exception):
                    stream.flush()
            self._saved = os.dup(self.fd)
            null = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(null, self.fd)
            finally:
                os.close(null)
            if self._llama_log:
                _set_llama_log(native=True)

    def exit(self) -> None:
        with self._lock:
            self._depth -= 1
            if self._depth > 0 or self._saved is None:
                return
            saved, self._saved = self._saved, None
            if self._llama_log:
                _set_llama_log(native=False)
            os.dup2(saved, self.fd)
            os.close(saved)


def _set_llama_log(*, native: bool) -> None:
    llama_cpp, logger = sys.modules.get("llama_cpp"), sys.modules.get("llama_cpp._logger")
    if llama_cpp is None or logger is None:  # not imported yet: its callback is not installed either
        return
    import ctypes

    # A null callback is llama.cpp's (and ggml's) default: fputs to stderr, no Python involved.
    callback = llama_cpp.llama_log_callback(0) if native else logger.llama_log_callback
    llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))


_STDOUT, _STDERR = _Silenced(1), _Silenced(2, llama_log=True)


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Silence C code that writes to file descriptor 2 itself (some llama.cpp warnings ignore verbose=False)."""
    _STDERR.enter()
    try:
        yield
    finally:
        _STDERR.exit()


class ThreadSafeSuppress:
    """A drop-in for `llama_cpp._utils.suppress_stdout_stderr(disable=...)`: descriptors 1 and 2 only."""

    def __init__(self, disable: bool = True) -> None:
        self.disable = disable

    def __enter__(self) -> ThreadSafeSuppress:
        if not self.disable:
            _STDOUT.enter()
            _STDERR.enter()
        return self

    def __exit__(self, *exc: Any) -> None:
        if not self.disable:
            _STDERR.exit()
            _STDOUT.exit()


# The modules of llama-cpp-python 0.3 that call suppress_stdout_stderr by their own global name.
_USERS = ("llama_cpp.llama", "llama_cpp._internals", "llama_cpp.llama_chat_format")


def use_quiet_loads() -> None:
    """Make llama-cpp-python silence llama.cpp the thread-safe way (idempotent)."""
    for name in _USERS:
        module = sys.modules.get(name)
        if module is not None and hasattr(module, "suppress_stdout_stderr"):
            setattr(module, "suppress_stdout_stderr", ThreadSafeSuppress)  # noqa: B010 (a module's global)


def import_llama_cpp() -> Any:
    """`import llama_cpp`, made to silence the thread-safe way: what constructs a `Llama` imports it so."""
    import llama_cpp

    use_quiet_loads()
    return llama_cpp
