"""ONNX Runtime adapter: runs the .onnx file of a variant on the CPU execution provider."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edge_sdk.bundle import Variant
from edge_sdk.errors import RuntimeFailure
from edge_sdk.types import Backend
from runtimes.base import Runtime, Session, SessionOptions, single_file


class OnnxSession(Session):
    thread_safe = True  # ORT's InferenceSession.run is documented as thread-safe

    def __init__(self, model_path: Path, variant: Variant, options: SessionOptions) -> None:
        so = ort.SessionOptions()
        if options.threads:
            so.intra_op_num_threads = options.threads
            so.inter_op_num_threads = 1
        so.log_severity_level = 3  # errors only: ORT's warnings are not the user's business
        try:
            session = ort.InferenceSession(str(model_path), so, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own untyped errors for a bad file
            raise RuntimeFailure(f"ONNX Runtime could not load {model_path.name!r}: {exc}") from exc
        self.inputs = variant.inputs
        self.outputs = variant.outputs
        self._output_names = [spec.name for spec in variant.outputs]
        # Session.run has already checked names, dtypes and shapes, so call ORT's C binding directly and skip
        # its Python wrapper's second validation: that is most of the per-call overhead on small models.
        self._session: ort.InferenceSession | None = session
        self._run_fn = getattr(getattr(session, "_sess", None), "run", None) or session.run

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            values = self._run_fn(self._output_names, inputs, None)
        except Exception as exc:
            raise RuntimeFailure(f"ONNX Runtime failed while running: {exc}") from exc
        return dict(zip(self._output_names, values, strict=True))

    def close(self) -> None:
        self._session = None


class OnnxRuntime(Runtime):
    backend = Backend.ONNX

    @classmethod
    def available(cls) -> bool:
        return importlib.util.find_spec("onnxruntime") is not None

    def _load(self, variant: Variant, root: Path, options: SessionOptions) -> Session:
        return OnnxSession(single_file(variant, root, ".onnx"), variant, options)
