"""Model sources: what `convert` accepts, each able to name its inputs and compute reference outputs."""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import sys
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_sdk.bundle.files import sha256_file
from edge_sdk.errors import ConfigError, ModelSourceError
from edge_sdk.types import DType, Task, TensorSpec

if TYPE_CHECKING:
    from torch import nn

BATCH = "batch"


@dataclass(frozen=True)
class PreprocessingFiles:
    """What the bundle must carry so a device can turn user input into tensors (e.g. a tokenizer)."""

    kind: str
    files: dict[str, Path]  # name in the bundle -> file on disk; the tokenizer first
    max_length: int
    pooling: str | None = None


class ModelSource(ABC):
    kind: str
    example_inputs: dict[str, np.ndarray]
    task: Task = Task.TENSOR  # what the source itself says it is (a Hugging Face config does)
    labels: tuple[str, ...] = ()  # class names by output index, when the source knows them

    def preprocessing(self) -> PreprocessingFiles | None:
        return None

    @abstractmethod
    def digest(self) -> str: ...

    @abstractmethod
    def reference(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs of the unconverted model: what every variant is measured against."""

    @abstractmethod
    def describe(self) -> str: ...

    @abstractmethod
    def input_specs(self) -> tuple[TensorSpec, ...]: ...

    def output_specs(self) -> tuple[TensorSpec, ...]:
        """The outputs' specs when the source knows them (their sample axes); () means axis 0 for each."""
        return ()


def _specs(
    arrays: Mapping[str, np.ndarray], dynamic_batch: bool, dynamic_axes: Mapping[int, tuple[str, int]] | None = None
) -> tuple[TensorSpec, ...]:
    def shape(a: np.ndarray) -> tuple[int | str, ...]:
        dims: list[int | str] = list(a.shape)
        if dynamic_batch and a.ndim > 0:
            dims[0] = BATCH
        for axis, (name, _) in (dynamic_axes or {}).items():
            if axis < a.ndim:
                dims[axis] = name
        return tuple(dims)

    return tuple(TensorSpec(name=name, dtype=DType.of(a.dtype), shape=shape(a)) for name, a in arrays.items())


@dataclass
class TorchSource(ModelSource):
    """A `torch.nn.Module` with example inputs (name -> array, in forward()'s argument order)."""

    module: nn.Module
    example_inputs: dict[str, np.ndarray]
    output_names: tuple[str, ...] = ("output",)
    description: str = ""
    # Axes beyond the batch that stay dynamic in every input: axis -> (name, largest size), e.g. a sequence.
    dynamic_axes: dict[int, tuple[str, int]] = field(default_factory=dict)
    kind: str = field(default="torch", init=False)

    def __post_init__(self) -> None:
        from torch import nn

        if not isinstance(self.module, nn.Module):
            raise ModelSourceError(f"expected a torch.nn.Module, got {type(self.module).__name__}")
        if not self.example_inputs:
            raise ConfigError("a torch model needs example inputs (an input shape or an .npz of arrays)")
        self.module.eval()

    def digest(self) -> str:
        h = hashlib.sha256()
        for name, tensor in sorted(self.module.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return "sha256:" + h.hexdigest()

    def input_specs(self, dynamic_batch: bool = True) -> tuple[TensorSpec, ...]:
        return _specs(self.example_inputs, dynamic_batch, self.dynamic_axes)

    def reference(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        with torch.no_grad():
            out = self.module(*(torch.from_numpy(np.ascontiguousarray(inputs[n])) for n in self.example_inputs))
        outs = out if isinstance(out, tuple | list) else (out,)
        if len(outs) != len(self.output_names):
            raise ModelSourceError(
                f"the model returns {len(outs)} outputs but {len(self.output_names)} output names were given"
            )
        return {n: o.detach().numpy() for n, o in zip(self.output_names, outs, strict=True)}

    def describe(self) -> str:
        return self.description or type(self.module).__name__


@dataclass
class OnnxFileSource(ModelSource):
    """An existing `.onnx` file, e.g. one exported by someone else, to quantize and bundle.

    Each input's sample axis is read from the model's symbolic dims (the symbol most inputs share, e.g. 'batch'
    of x[batch, T] and state[2, batch, H]); an input without it is not batched (a scalar, a fixed side input).
    `batch_axes` (input -> axis) and `static_inputs` say it where the model does not."""

    path: Path
    example_inputs: dict[str, np.ndarray] = field(default_factory=dict)
    batch_axes: dict[str, int] = field(default_factory=dict)
    static_inputs: tuple[str, ...] = ()
    kind: str = field(default="onnx", init=False)
    examples_are_stand_ins: bool = field(default=False, init=False)  # seeded noise: no data came with the model

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        inputs, self.outputs = read_onnx_signature(self.path)
        self.inputs = declare_axes(inputs, self.batch_axes, self.static_inputs)
        if not self.example_inputs:
            self.example_inputs = _synthesize(self.inputs)
            self.examples_are_stand_ins = True
        check_examples(self.example_inputs, self.inputs)
        self._session: Any = None

    def digest(self) -> str:
        return "sha256:" + sha256_file(self.path)

    def input_specs(self) -> tuple[TensorSpec, ...]:
        return self.inputs

    def output_specs(self) -> tuple[TensorSpec, ...]:
        return self.outputs

    def reference(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import onnxruntime as ort

        from runtimes.onnxruntime_adapter import session_options

        if self._session is None:  # an int8 source model must be measured as exactly as its variants
            self._session = ort.InferenceSession(str(self.path), session_options(), providers=["CPUExecutionProvider"])
        names = [o.name for o in self.outputs]
        return dict(zip(names, self._session.run(names, dict(inputs)), strict=True))

    def describe(self) -> str:
        return self.path.name


def declare_axes(
    specs: tuple[TensorSpec, ...], batch_axes: Mapping[str, int], static: Sequence[str]
) -> tuple[TensorSpec, ...]:
    """The user's word on sample axes over the model's: `batch_axes` name -> axis, `static` never sliced."""
    names = [s.name for s in specs]
    for name in [*batch_axes, *static]:
        if name not in names:
            raise ConfigError(f"the model has no input {name!r}; its inputs: {', '.join(names)}")
    both = set(batch_axes) & set(static)
    if both:
        raise ConfigError(f"input {sorted(both)[0]!r} is given both a batch axis and --static-input; choose one")
    out = []
    for s in specs:
        axis = None if s.name in static else batch_axes.get(s.name, s.sample_axis)
        if axis is not None and not 0 <= axis < len(s.shape):
            raise ConfigError(
                f"input {s.name!r} ({s.describe()}) has no axis {axis}; valid batch axes: 0..{len(s.shape) - 1}"
                if s.shape
                else f"input {s.name!r} is a scalar: it has no batch axis (declare it with --static-input)"
            )
        out.append(s.model_copy(update={"sample_axis": axis}))
    return tuple(out)


def check_examples(arrays: Mapping[str, np.ndarray], specs: tuple[TensorSpec, ...]) -> None:
    """Example data must fit the model: a scalar input given as an array of values is the usual slip."""
    for s in specs:
        array = arrays.get(s.name)
        if array is None:
            raise ConfigError(f"the example data lacks input {s.name!r}; the model takes {[x.name for x in specs]}")
        if not s.shape and array.ndim:
            raise ConfigError(
                f"input {s.name!r} is a scalar, but the example gives shape {list(array.shape)}: give one value "
                "(a 0-d array); a scalar is not batched"
            )
        if len(array.shape) != len(s.shape):
            raise ConfigError(
                f"input {s.name!r} has shape {list(array.shape)} in the example; the model takes {s.describe()}"
            )


def read_onnx_signature(path: Path) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    import onnx
    from onnx import helper

    if not path.is_file():
        raise ModelSourceError(f"ONNX file {str(path)!r} does not exist")
    try:
        model = onnx.load(str(path), load_external_data=False)
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx raises DecodeError, ValidationError, ... for a non-model
        raise ModelSourceError(f"{str(path)!r} is not a valid ONNX model: {str(exc).splitlines()[0]}") from None

    initializers = {i.name for i in model.graph.initializer}
    graph_inputs = [v for v in model.graph.input if v.name not in initializers]

    def dims(value: Any) -> tuple[int | str, ...]:
        shape = value.type.tensor_type.shape.dim
        return tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or BATCH) for d in shape)

    symbol = _batch_symbol([dims(v) for v in graph_inputs])

    def spec(value: Any) -> TensorSpec:
        shape = dims(value)
        dtype = DType.of(helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type))
        if symbol is None:  # a fully static model: axis 0 is its (fixed) batch, as before sample axes existed
            return TensorSpec(name=value.name, dtype=dtype, shape=shape)
        axis = shape.index(symbol) if symbol in shape else None
        return TensorSpec(name=value.name, dtype=dtype, shape=shape, sample_axis=axis)

    return tuple(spec(v) for v in graph_inputs), tuple(spec(v) for v in model.graph.output)


def _batch_symbol(shapes: list[tuple[int | str, ...]]) -> str | None:
    """The symbolic dim most inputs share (ties: the one nearest the front): what the sample axis is named."""
    seen: dict[str, tuple[int, int]] = {}  # symbol -> (inputs holding it, -earliest axis)
    for shape in shapes:
        for axis, d in enumerate(shape):
            if isinstance(d, str):
                count, front = seen.get(d, (0, -axis))
                seen[d] = (count + 1 if d not in shape[:axis] else count, max(front, -axis))
    return max(seen, key=lambda k: seen[k]) if seen else None


def _synthesize(specs: tuple[TensorSpec, ...], batch: int = 8) -> dict[str, np.ndarray]:
    """Seeded stand-in inputs for a model that came without data: symbolic dims become `batch`."""
    rng = np.random.default_rng(0)
    out = {}
    for s in specs:
        shape = tuple(d if isinstance(d, int) else batch for d in s.shape)
        if s.dtype in (DType.FLOAT32, DType.FLOAT16):
            out[s.name] = rng.standard_normal(shape).astype(s.dtype.numpy)
        else:
            out[s.name] = rng.integers(0, 2, size=shape).astype(s.dtype.numpy)
    return out


def load_factory(spec: str) -> nn.Module:
    """'path/to/file.py:factory' -> the module the factory returns."""
    file_part, _, attr = spec.rpartition(":")
    if not file_part or not attr:
        raise ConfigError(f"model {spec!r} should be 'path/to/file.py:factory', an .onnx file, or 'zoo:digits-cnn'")
    path = Path(file_part)
    if not path.is_file():
        raise ModelSourceError(f"model file {file_part!r} does not exist")
    mod_name = f"_edge_sdk_user_model_{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]}"
    module_spec = importlib.util.spec_from_file_location(mod_name, path)
    if module_spec is None or module_spec.loader is None:
        raise ModelSourceError(f"{file_part!r} is not an importable Python file")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[mod_name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        raise ModelSourceError(f"importing {file_part!r} failed: {type(exc).__name__}: {exc}") from exc
    factory = getattr(module, attr, None)
    if factory is None or not callable(factory):
        found = [n for n, v in vars(module).items() if inspect.isfunction(v) and not n.startswith("_")]
        raise ModelSourceError(f"{file_part!r} has no callable {attr!r}; functions there: {found}")
    return factory()


def eval_data_of(model: object, method: str = "eval_data") -> tuple[dict[str, np.ndarray], np.ndarray | None] | None:
    """The model's own labelled data, if it offers `eval_data()` (or `train_data()`) -> (inputs, labels)."""
    provider = getattr(model, method, None)
    if not callable(provider):
        return None
    inputs, labels = provider()
    return {str(k): np.asarray(v) for k, v in dict(inputs).items()}, (None if labels is None else np.asarray(labels))


def example_inputs_of(module: nn.Module) -> dict[str, np.ndarray] | None:
    """The model's own example data, if it offers `example_inputs()` (see converters.zoo.DigitsCNN)."""
    provider = getattr(module, "example_inputs", None)
    if provider is None:
        return None
    data = provider() if callable(provider) else provider
    if isinstance(data, np.ndarray):
        return {"input": data}
    return {str(k): np.asarray(v) for k, v in dict(data).items()}
