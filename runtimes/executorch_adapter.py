"""ExecuTorch adapter: runs the .pte file of a variant through `executorch.runtime` (XNNPACK delegate built in).

Threads: the Python runtime exposes no per-session thread count. XNNPACK runs on one process-wide threadpool, so
`SessionOptions.threads` resizes that pool (`_unsafe_reset_threadpool`) when the session is loaded: it then applies
to every ExecuTorch session of the process. XNNPACK's C++ start-up log (cpuinfo probing) is silenced on the
first load; later native log lines (e.g. a failed run) still reach stderr, and the error raised repeats them.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import os
import sys
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edge_sdk.bundle import Variant
from edge_sdk.errors import RuntimeFailure
from edge_sdk.types import Backend
from runtimes.base import MAX_ACCEPTED_SHAPES, Runtime, Session, SessionOptions, single_file

_from_numpy = torch.from_numpy
_NOISY_LOGGERS = ("torch.utils._pytree", "torch._export", "torch.export", "torch.fx", "torchao", "executorch", "root")


@contextlib.contextmanager
def quiet_engine() -> Iterator[None]:
    """Keep the engine's chatter out of the user's way.

    Importing executorch pulls in torchao, which prints missing-CUDA-kernel notices and a pytree warning; export
    and lowering narrate on stdout, log through torch's own handlers and warn about deprecations.
    """
    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with (
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """XNNPACK's first initialisation logs cpuinfo probing from C++ straight to file descriptor 2."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real fd 2 (embedded interpreter): nothing to silence
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


with quiet_engine():
    from executorch.runtime import Runtime as _EtRuntime

_first_load = True


def _set_threads(threads: int) -> None:
    from executorch.extension.pybindings import portable_lib

    current = getattr(portable_lib, "_threadpool_get_thread_count", None)
    reset = getattr(portable_lib, "_unsafe_reset_threadpool", None)
    if reset is None or (current is not None and current() == threads):
        return
    with _native_stderr_silenced():  # the pool logs every resize from C++
        reset(threads)


class ExecuTorchSession(Session):
    def __init__(self, program_path: Path, variant: Variant, options: SessionOptions) -> None:
        if options.threads:
            _set_threads(options.threads)
        global _first_load
        try:
            with _native_stderr_silenced() if _first_load else contextlib.nullcontext():
                self._program = _EtRuntime.get().load_program(program_path)
                method = self._program.load_method("forward")
            _first_load = False
        except Exception as exc:  # the runtime raises bare RuntimeError/ValueError for a bad program
            raise RuntimeFailure(f"ExecuTorch could not load {program_path.name!r}: {exc}") from exc
        if method is None:
            raise RuntimeFailure(f"{program_path.name!r} has no 'forward' method")
        self.inputs = variant.inputs
        self.outputs = variant.outputs
        self._names = [spec.name for spec in variant.inputs]
        self._output_names = [spec.name for spec in variant.outputs]
        dynamic = bool(variant.inputs) and bool(variant.inputs[0].shape) and isinstance(variant.inputs[0].shape[0], str)
        self._max_batch = _planned_batch(method) if dynamic else None
        self._single_output = len(self._output_names) == 1
        # Method.execute is a one-line wrapper over the binding: the binding is called instead, which saves a
        # Python frame per run and lets the outputs come back as views of the program's own buffers
        # (clone_outputs=False). They are copied once, into numpy, before the next run can overwrite them: ~0.2 µs,
        # where the binding's clone into new torch tensors costs ~1.5 µs a call (a tenth of a digits CNN's run).
        binding = getattr(method, "_method", None)
        self._call: Any = binding if binding is not None else (lambda tensors, _clone: method.execute(tensors))
        if len(self._names) == 1 and self._single_output:
            self.run = self._fast_run()  # type: ignore[method-assign]

    def _fast_run(self) -> Any:
        """`run` for one input and one output (the common case): a ~12 µs model feels every attribute read, so a
        contiguous array of the dtype, of a shape the full path has accepted before within the planned batch, goes
        straight to the binding; anything else takes Session.run's full path (which then remembers the shape). A
        closure, so that per call it reads locals, not attributes; one set lookup answers both "accepted" and
        "within the planned batch"."""
        (name, dtype, _ndim, _fixed, _accepted), out_name = self._signature()[0], self._output_names[0]
        call, max_batch, full_run, ndarray = self._call, self._max_batch, super().run, np.ndarray
        fast: set[tuple[int, ...]] = set()  # accepted shapes whose batch the program was planned for

        def run(inputs: Mapping[str, np.ndarray], *, check: bool = True) -> dict[str, np.ndarray]:
            if type(inputs) is dict and len(inputs) == 1:
                array = inputs.get(name)
                if (
                    type(array) is ndarray
                    and array.dtype is dtype
                    and array.flags.c_contiguous
                    and (array.shape in fast or (not check and _within(array, max_batch)))
                ):
                    try:
                        return {out_name: call([_from_numpy(array)], False)[0].numpy().copy()}
                    except Exception as exc:
                        raise RuntimeFailure(f"ExecuTorch failed while running: {exc}") from exc
                outputs = full_run(inputs, check=check)
                if check and type(array) is ndarray and _within(array, max_batch):
                    if len(fast) >= MAX_ACCEPTED_SHAPES:  # a caller cycling through batch sizes: stay bounded
                        fast.clear()
                    fast.add(array.shape)  # the full path accepted it (or raised above)
                return outputs
            return full_run(inputs, check=check)

        return run

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        # Session.run has checked names, dtypes and ranks; this stays a few attribute reads per call (per-call
        # overhead is what a 20 µs model feels). `_max_batch` is None when the program has no batch dim to bound.
        tensors = []
        for name in self._names:
            array = inputs[name]
            if self._max_batch is not None and array.shape[0] > self._max_batch:
                return self._run_sliced(inputs, array.shape[0])
            tensors.append(_from_numpy(array if array.flags.c_contiguous else np.ascontiguousarray(array)))
        try:
            values = self._call(tensors, False)  # views of the program's buffers: copied below
        except Exception as exc:
            raise RuntimeFailure(f"ExecuTorch failed while running: {exc}") from exc
        if self._single_output:
            return {self._output_names[0]: values[0].numpy().copy()}
        return {name: value.numpy().copy() for name, value in zip(self._output_names, values, strict=True)}

    def _run_sliced(self, inputs: dict[str, np.ndarray], count: int) -> dict[str, np.ndarray]:
        """The .pte was memory-planned for at most `max_batch` samples: run larger inputs in slices."""
        step = self._max_batch or count
        parts = [self._run({n: inputs[n][i : i + step] for n in self._names}) for i in range(0, count, step)]
        return {k: np.concatenate([p[k] for p in parts]) for k in self._output_names}

    def close(self) -> None:
        self.__dict__.pop("run", None)
        self._call = None
        self._program = None


def _within(array: np.ndarray, max_batch: int | None) -> bool:
    """Whether the program runs `array` in one go (no slicing): its batch is within the planned one."""
    return max_batch is None or bool(array.ndim and array.shape[0] <= max_batch)


def _planned_batch(method: Any) -> int | None:
    """The leading dimension the program was memory-planned for (its upper bound), if it has inputs."""
    try:
        meta = method.metadata
        if meta.num_inputs() == 0:
            return None
        sizes = meta.input_tensor_meta(0).sizes()
        return int(sizes[0]) if len(sizes) else None
    except Exception:  # older bindings: no metadata, so no slicing
        return None


class ExecuTorchRuntime(Runtime):
    backend = Backend.EXECUTORCH

    @classmethod
    def available(cls) -> bool:
        return importlib.util.find_spec("executorch") is not None

    def _load(self, variant: Variant, root: Path, options: SessionOptions) -> Session:
        return ExecuTorchSession(single_file(variant, root, ".pte"), variant, options)
