"""ONNX Runtime adapter: runs the .onnx file of a variant on the CPU execution provider."""

from __future__ import annotations

import importlib.util
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from edge_sdk.bundle import Variant
from edge_sdk.errors import RuntimeFailure
from edge_sdk.types import Backend
from runtimes.base import Runtime, Session, SessionOptions, single_file

# ORT's x86 int8 kernels without VNNI (AVX2 only) add u8×s8 products pairwise in int16 and saturate: an int8 model
# then drifts on such a host as it never would on an ARM board or a VNNI/AMX CPU. This documented session option
# keeps the exact int32 accumulation on every x86 CPU (slower on AVX2-only, unchanged elsewhere), so a verdict
# measured on one host holds on the others and on the board.
X64_QUANT_PRECISION = ("session.x64quantprecision", "1")
_X86_MACHINES = {"x86_64", "amd64", "i386", "i686", "x86"}


def session_options(threads: int | None = None) -> ort.SessionOptions:
    """The SessionOptions every ORT session of the SDK uses: converting, verifying and serving alike."""
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    so.log_severity_level = 3  # errors only: ORT's warnings are not the user's business
    if platform.machine().lower() in _X86_MACHINES:
        so.add_session_config_entry(*X64_QUANT_PRECISION)
    return so


class OnnxSession(Session):
    thread_safe = True  # ORT's InferenceSession.run is documented as thread-safe

    def __init__(self, model_path: Path, variant: Variant, options: SessionOptions) -> None:
        try:
            session = ort.InferenceSession(
                str(model_path), session_options(options.threads), providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # ORT raises its own untyped errors for a bad file
            raise RuntimeFailure(f"ONNX Runtime could not load {model_path.name!r}: {exc}") from exc
        self.inputs = variant.inputs
        self.outputs = variant.outputs
        self._output_names = [spec.name for spec in variant.outputs]
        # Session.run has already checked names, dtypes and shapes, so call ORT's C binding directly and skip
        # its Python wrapper's second validation: that is most of the per-call overhead on small models.
        self._session: ort.InferenceSession | None = session
        self._run_fn = getattr(getattr(session, "_sess", None), "run", None) or session.run
        if len(self.inputs) == 1 and len(self._output_names) == 1:
            self.run = self._fast_run()  # type: ignore[method-assign]

    def _fast_run(self) -> Any:
        """`run` for one input and one output (the common case): a ~15 µs model feels every attribute read, so an
        array of the dtype and a shape this session has accepted before goes straight to ORT's binding; anything
        else takes Session.run's full path. A closure, so that per call it reads locals, not attributes."""
        (name, dtype, _ndim, _fixed, accepted), out_name = self._signature()[0], self._output_names[0]
        run_fn, outputs, full_run, ndarray = self._run_fn, self._output_names, super().run, np.ndarray

        def run(inputs: Mapping[str, np.ndarray], *, check: bool = True) -> dict[str, np.ndarray]:
            if type(inputs) is dict and len(inputs) == 1:
                array = inputs.get(name)
                if type(array) is ndarray and array.dtype is dtype and (not check or array.shape in accepted):
                    try:
                        return {out_name: run_fn(outputs, inputs, None)[0]}
                    except Exception as exc:
                        raise RuntimeFailure(f"ONNX Runtime failed while running: {exc}") from exc
            return full_run(inputs, check=check)

        return run

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            values = self._run_fn(self._output_names, inputs, None)
        except Exception as exc:
            raise RuntimeFailure(f"ONNX Runtime failed while running: {exc}") from exc
        return dict(zip(self._output_names, values, strict=True))

    def close(self) -> None:
        self.__dict__.pop("run", None)
        self._session = None


class OnnxRuntime(Runtime):
    backend = Backend.ONNX

    @classmethod
    def available(cls) -> bool:
        return importlib.util.find_spec("onnxruntime") is not None

    def _load(self, variant: Variant, root: Path, options: SessionOptions) -> Session:
        from runtimes.onnx_genai_adapter import OnnxGenaiSession, is_genai_variant

        if is_genai_variant(variant):  # a language model built by onnxruntime-genai: run by its own engine
            return OnnxGenaiSession(single_file(variant, root, "genai_config.json").parent, options)
        return OnnxSession(single_file(variant, root, ".onnx"), variant, options)

    def import_engine(self, variant: Variant) -> None:
        from runtimes.onnx_genai_adapter import import_genai, is_genai_variant

        if is_genai_variant(variant):
            import_genai()
