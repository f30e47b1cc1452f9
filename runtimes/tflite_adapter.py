"""LiteRT (ex-TensorFlow Lite) adapter: runs the .tflite file of a variant with `ai_edge_litert`'s Interpreter.

Callers always pass and get float32 for tensors the model stores as int8 / uint8 with a scale and zero point:
inputs are quantized and outputs dequantized here with the model's own parameters, as the TensorSpecs say.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from edge_sdk.bundle import Variant
from edge_sdk.errors import InputError, RuntimeFailure
from edge_sdk.types import Backend, DType, TensorSpec
from runtimes.base import Runtime, Session, SessionOptions, single_file

BATCH = "batch"
_QUANTIZED = (np.dtype(np.int8), np.dtype(np.uint8))


@dataclass(frozen=True)
class Port:
    """One model input or output: where it lives in the interpreter and how it is (de)quantized."""

    index: int
    spec: TensorSpec  # as callers see it (float32 for a quantized tensor)
    engine_dtype: np.dtype
    scale: float = 0.0  # 0.0: not quantized
    zero_point: int = 0

    @property
    def quantized(self) -> bool:
        return self.scale != 0.0

    def describe_quantization(self) -> str:
        return f"{self.engine_dtype.name} scale={self.scale!r} zero_point={self.zero_point}"


def _port(detail: dict[str, Any], what: str, names: dict[int, str]) -> Port:
    name = names.get(int(detail["index"]), str(detail["name"]))
    dtype = np.dtype(detail["dtype"])
    signature = detail.get("shape_signature")
    dims = [int(d) for d in (signature if signature is not None and len(signature) else detail["shape"])]
    shape = tuple(BATCH if (d < 0 and i == 0) else (f"dim{i}" if d < 0 else d) for i, d in enumerate(dims))
    params = detail.get("quantization_parameters") or {}
    scales = np.asarray(params.get("scales", []), dtype=np.float64)
    zeros = np.asarray(params.get("zero_points", []), dtype=np.int64)
    if dtype in _QUANTIZED and scales.size:
        if scales.size != 1:
            raise RuntimeFailure(
                f"{what} {name!r} is quantized per channel ({scales.size} scales); only per-tensor "
                "quantization is supported on model inputs and outputs"
            )
        spec = TensorSpec(name=name, dtype=DType.FLOAT32, shape=shape)
        return Port(int(detail["index"]), spec, dtype, float(scales[0]), int(zeros[0]) if zeros.size else 0)
    return Port(int(detail["index"]), TensorSpec(name=name, dtype=DType.of(dtype), shape=shape), dtype)


class LiteRtModel:
    """A .tflite file in a LiteRT interpreter, run with float32 at its edges; shared by the runtime and the
    source that wraps an existing file (whose `reference()` must run the original exactly the same way)."""

    def __init__(self, path: Path, threads: int | None = None) -> None:
        try:
            self._interp = Interpreter(model_path=str(path), num_threads=threads)
            self._interp.allocate_tensors()
        except Exception as exc:  # LiteRT raises ValueError / RuntimeError with its own text
            raise RuntimeFailure(f"LiteRT could not load {path.name!r}: {str(exc).strip()}") from exc
        self.path = path
        names = self._signature_names()
        self.inputs = tuple(_port(d, "input", names) for d in self._interp.get_input_details())
        self.outputs = tuple(_port(d, "output", names) for d in self._interp.get_output_details())
        details = self._interp.get_input_details()
        # Python ints, not numpy's: compared with an input's shape on every call (numpy scalars compare slowly).
        self._shapes = {p.index: tuple(int(d) for d in details[i]["shape"]) for i, p in enumerate(self.inputs)}
        # What `run` reads per call, as plain tuples: (name, index, engine dtype, the port if it is quantized).
        self._ports = {p.index: p for p in self.inputs}
        self._feeds = [(p.spec.name, p.index, p.engine_dtype, p if p.quantized else None) for p in self.inputs]
        self._fetches = [(p.spec.name, p.index, p if p.quantized else None) for p in self.outputs]

    def _signature_names(self) -> dict[int, str]:
        """Tensor index -> the name the model's only signature gives it ('image' rather than
        'serving_default_image:0'); empty when there is no single signature, and tensor names are used."""
        signatures = self._interp.get_signature_list()
        if len(signatures) != 1:
            return {}
        runner = self._interp.get_signature_runner(next(iter(signatures)))
        details = {**runner.get_input_details(), **runner.get_output_details()}
        names = {int(d["index"]): str(name) for name, d in details.items()}
        return names if len(set(names.values())) == len(names) else {}

    def quantization(self) -> dict[str, str]:
        """How each int8/uint8 input and output is quantized, for the variant's recipe."""
        ports = [("input", p) for p in self.inputs] + [("output", p) for p in self.outputs]
        return {f"{kind}.{p.spec.name}": p.describe_quantization() for kind, p in ports if p.quantized}

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        # Per-call cost is what a 10 µs model feels: arrays already in the engine's dtype go in as they are (the
        # binding makes them contiguous if need be), and the interpreter's C binding is called directly: its
        # Python wrappers re-check, per call, that no numpy view of its buffers is alive, and this class never
        # makes one (get_tensor returns copies).
        interp = self._interp
        arrays = []
        resized = False
        for name, index, dtype, port in self._feeds:
            array = inputs[name]
            if port is not None or type(array) is not np.ndarray or array.dtype != dtype:
                array = _to_engine(port or self._ports[index], np.asarray(array))
            if self._shapes[index] != array.shape:
                try:
                    interp.resize_tensor_input(index, list(array.shape), strict=True)
                except Exception as exc:
                    raise InputError(f"{self.path.name!r} cannot take an input of shape {array.shape}: {exc}") from exc
                self._shapes[index], resized = array.shape, True
            arrays.append((index, array))
        try:
            if resized:
                interp.allocate_tensors()
            # Not kept on self: the wrapper counts references to the binding to know no view of its buffers lives.
            raw = interp._interpreter
            for index, array in arrays:
                raw.SetTensor(index, array)
            raw.Invoke()
            outputs = {}
            for name, index, port in self._fetches:
                value = raw.GetTensor(index)
                outputs[name] = value if port is None else _from_engine(port, value)
            return outputs
        except Exception as exc:
            raise RuntimeFailure(f"LiteRT failed while running {self.path.name!r}: {exc}") from exc

    def close(self) -> None:
        self._interp = None


def _to_engine(port: Port, array: np.ndarray) -> np.ndarray:
    if not port.quantized:
        return np.ascontiguousarray(array, dtype=port.engine_dtype)
    info = np.iinfo(port.engine_dtype)
    q = np.round(array.astype(np.float32) / np.float32(port.scale)) + port.zero_point
    return np.clip(q, info.min, info.max).astype(port.engine_dtype)


def _from_engine(port: Port, array: np.ndarray) -> np.ndarray:
    if not port.quantized:
        return array  # get_tensor returns a copy: the next invoke does not change it
    return ((array.astype(np.float32) - np.float32(port.zero_point)) * np.float32(port.scale)).astype(np.float32)


class LiteRtSession(Session):
    thread_safe = False  # one Interpreter holds its tensors in place: calls must not overlap

    def __init__(self, model_path: Path, variant: Variant, options: SessionOptions) -> None:
        self._model: LiteRtModel | None = LiteRtModel(model_path, options.threads)
        self.inputs = variant.inputs
        self.outputs = variant.outputs
        fast = self._fast_run(self._model)
        if fast is not None:
            self.run = fast  # type: ignore[method-assign]  # until close()

    def _fast_run(self, model: LiteRtModel) -> Any:
        """`run` for one float input and one float output (the common case). A 10 µs model feels every attribute
        read and every tuple made, so an array goes straight to the interpreter's binding, whose `SetTensor`
        checks in C what Session.run would check here: the dtype, and the shape against the size the interpreter
        has now. That size is one the signature accepted (a checked call sized it), or the model's own until
        then; what the binding refuses, or a first call, takes Session.run's full path (checks, resizing,
        InputError). A closure, so that per call it reads locals, not attributes."""
        if len(model.inputs) != 1 or len(model.outputs) != 1 or model.inputs[0].quantized or model.outputs[0].quantized:
            return None
        (name, dtype, _ndim, _fixed, accepted), port, out = self._signature()[0], model.inputs[0], model.outputs[0]
        if name != port.spec.name or dtype != port.engine_dtype:
            return None
        index, out_name, out_index, shapes, interp = port.index, out.spec.name, out.index, model._shapes, model._interp
        full_run, ndarray = super().run, np.ndarray
        # Whether the interpreter's input size is a shape the signature accepted: then a checked call whose array
        # the binding takes needs no check of its own. A trusted call (check=False) may size it to anything.
        sized_by_check = [False]

        def slow(inputs: Mapping[str, np.ndarray], check: bool) -> dict[str, np.ndarray]:
            result = full_run(inputs, check=check)
            sized_by_check[0] = shapes[index] in accepted
            return result

        def run(inputs: Mapping[str, np.ndarray], *, check: bool = True) -> dict[str, np.ndarray]:
            if type(inputs) is dict and len(inputs) == 1 and (sized_by_check[0] or not check):
                array = inputs.get(name)
                if type(array) is ndarray:
                    raw = interp._interpreter  # see LiteRtModel.run
                    try:
                        raw.SetTensor(index, array)
                    except ValueError:  # another dtype, or another shape than the interpreter's: the full path
                        raw = None  # resizing counts the references to the binding: this one must be gone
                        return slow(inputs, check)
                    try:
                        raw.Invoke()
                        return {out_name: raw.GetTensor(out_index)}
                    except Exception as exc:
                        raise RuntimeFailure(f"LiteRT failed while running {model.path.name!r}: {exc}") from exc
            return slow(inputs, check)

        return run

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._model is None:
            raise RuntimeFailure("this LiteRT session is closed")
        return self._model.run(inputs)

    def close(self) -> None:
        self.__dict__.pop("run", None)  # the fast path holds the interpreter
        if self._model is not None:
            self._model.close()
            self._model = None


class LiteRtRuntime(Runtime):
    backend = Backend.TFLITE

    @classmethod
    def available(cls) -> bool:
        return importlib.util.find_spec("ai_edge_litert") is not None

    def _load(self, variant: Variant, root: Path, options: SessionOptions) -> Session:
        return LiteRtSession(single_file(variant, root, ".tflite"), variant, options)
