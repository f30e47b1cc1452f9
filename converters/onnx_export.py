"""ONNX backend exporter: torch -> .onnx (or an existing .onnx), then ONNX Runtime quantization."""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
from onnxruntime.quantization import CalibrationDataReader
from onnxruntime.quantization import CalibrationMethod as OrtCalibrationMethod

from converters.exporter import Exporter, ExportRequest, ExportResult
from converters.onnx_recipe import DEFAULT_METHOD, GraphRecipe, layer_bytes, recipe_for
from converters.sources import BATCH, OnnxFileSource, TorchSource, read_onnx_signature
from converters.verify import chunks
from edge_sdk.bundle import Recipe, RuntimeRequirement
from edge_sdk.errors import ConfigError, EdgeSDKError, ExportError, ModelSourceError, choices
from edge_sdk.types import Backend, CalibrationMethod, QuantScheme, TensorSpec

OPSET = 20
_INT8 = (QuantScheme.INT8_DYNAMIC, QuantScheme.INT8_STATIC)
_ORT_METHOD = {
    CalibrationMethod.MINMAX: OrtCalibrationMethod.MinMax,
    CalibrationMethod.ENTROPY: OrtCalibrationMethod.Entropy,
    CalibrationMethod.PERCENTILE: OrtCalibrationMethod.Percentile,
}
CALIBRATION_BATCH = 32
_PRECISION = {
    QuantScheme.NONE: "fp32",
    QuantScheme.FP16: "fp16",
    QuantScheme.INT8_DYNAMIC: "int8 weights, dynamic int8 activations",
    QuantScheme.INT8_STATIC: "int8 weights and activations (QDQ, calibrated)",
}


class OnnxExporter(Exporter):
    backend = Backend.ONNX
    quantizations = tuple(_PRECISION)

    def export(self, request: ExportRequest) -> ExportResult:
        self.check(request.quantization)
        source = request.source
        base = request.base_dir / "fp32.onnx"
        if isinstance(source, TorchSource | OnnxFileSource):
            inputs = source.input_specs()
        else:
            raise ModelSourceError(f"the onnx backend cannot read a {source.kind!r} source")
        if not base.is_file():  # every quantization (and accuracy-aware trial) starts from one export
            if isinstance(source, TorchSource):
                _export_torch(source, base)
            else:
                shutil.copyfile(source.path, base)
        outputs = _output_specs(base)
        out = request.workdir / "model.onnx"
        calibration = request.calibration if request.calibration is not None else source.example_inputs
        recipe = recipe_for(base)
        options = {"opset": str(OPSET)}
        if request.quantization in _INT8:
            method = request.calibration_method or DEFAULT_METHOD[recipe.kind]
            options |= {"model_kind": recipe.kind, "recipe": recipe.describe(), "per_channel": "true"}
            if request.quantization is QuantScheme.INT8_STATIC:
                options["calibration_method"] = method.value
            plan = _Int8Plan(recipe, request.keep_float, method, request.base_dir / f"calibration-{method.value}.json")
            if request.keep_float:
                options["float_layers"] = ",".join(request.keep_float)
        else:
            plan = None
        _quantize(base, out, request.quantization, _CalibrationReader(calibration, inputs), plan)
        if plan is not None:  # what quantization bought where it applies: the weights of the quantizable layers
            options["layer_weight_bytes"] = str(layer_bytes(out, recipe.layers))
            options["layer_weight_bytes_fp32"] = str(sum(layer.weight_bytes for layer in recipe.layers))
        return ExportResult(
            files={"model.onnx": out},
            inputs=inputs,
            outputs=outputs,
            recipe=Recipe(
                quantization=request.quantization, precision=_PRECISION[request.quantization], options=options
            ),
            runtime=RuntimeRequirement(package="onnxruntime", version=onnxruntime.__version__, extra="onnx"),
        )

    def layers(self, request: ExportRequest) -> tuple[str, ...]:
        base = request.base_dir / "fp32.onnx"
        if request.quantization not in _INT8 or not base.is_file():
            return ()
        return tuple(layer.name for layer in sorted(recipe_for(base).layers, key=lambda x: -x.weight_bytes))


@dataclass(frozen=True)
class _Int8Plan:
    recipe: GraphRecipe
    keep_float: tuple[str, ...]
    method: CalibrationMethod
    calibration_cache: Path  # ranges measured once per method, reused by every re-quantization of the export

    def excluded(self) -> list[str]:
        known = {layer.name for layer in self.recipe.layers}
        unknown = [n for n in self.keep_float if n not in known]
        if unknown:
            raise ConfigError(f"cannot keep {unknown} in float: not a quantizable layer; valid: {choices(known)}")
        # The dynamic quantizer first splits a Gemm into `<name>_MatMul` + Add, and excludes by the new name.
        gemms = [f"{n}_MatMul" for n in self.keep_float if self._op(n) == "Gemm"]
        return [*self.recipe.always_float, *self.keep_float, *gemms]

    def _op(self, name: str) -> str:
        return next(layer.op for layer in self.recipe.layers if layer.name == name)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporters narrate every step on stdout and warn about torchvision; keep that out of the user's way."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "root")]  # ORT's quantizer logs on root
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _export_torch(source: TorchSource, dest: Path) -> None:
    """Export with the dynamo exporter (a dynamic batch axis); fall back to TorchScript if it refuses."""
    import torch

    names = list(source.example_inputs)
    args = tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in source.example_inputs.values())
    batch = torch.export.Dim(BATCH)
    extra = {axis: torch.export.Dim(name, max=size) for axis, (name, size) in source.dynamic_axes.items()}
    errors = []
    with _quiet():
        try:
            program = torch.onnx.export(
                source.module,
                args,
                None,
                dynamo=True,
                verbose=False,
                opset_version=OPSET,
                input_names=names,
                output_names=list(source.output_names),
                dynamic_shapes=tuple({0: batch, **extra} for _ in args),
            )
            if program is None:  # only happens when a file path is given
                raise ExportError("the dynamo exporter returned no program")
            program.save(str(dest))
            _drop_weight_value_info(dest)
            return
        except Exception as exc:  # the exporter raises many unrelated types
            errors.append(f"torch.export: {_first_line(exc)}")
        try:
            torch.onnx.export(
                source.module,
                args,
                str(dest),
                dynamo=False,
                opset_version=OPSET,
                input_names=names,
                output_names=list(source.output_names),
                dynamic_axes={
                    **{n: {0: BATCH, **{a: d[0] for a, d in source.dynamic_axes.items()}} for n in names},
                    **{n: {0: BATCH} for n in source.output_names},
                },
            )
            return
        except Exception as exc:
            errors.append(f"TorchScript: {_first_line(exc)}")
    raise ExportError(
        f"{source.describe()} could not be exported to ONNX. "
        + " | ".join(errors)
        + ". Data-dependent control flow and custom ops are the usual cause: rewrite them with torch.cond or "
        "tensor ops, or try --backend executorch."
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def _drop_weight_value_info(path: Path) -> None:
    """The dynamo exporter writes value_info for weights, which ORT's quantizer rejects (see DEPENDENCIES.md)."""
    model = onnx.load(str(path))
    weights = {init.name for init in model.graph.initializer}
    keep = [v for v in model.graph.value_info if v.name not in weights]
    del model.graph.value_info[:]
    model.graph.value_info.extend(keep)
    onnx.save(model, str(path))


def _output_specs(path: Path) -> tuple[TensorSpec, ...]:
    return read_onnx_signature(path)[1]


def _quantize(
    src: Path, dest: Path, scheme: QuantScheme, calibration: CalibrationDataReader, plan: _Int8Plan | None
) -> None:
    try:
        with _quiet():
            _apply(src, dest, scheme, calibration, plan)
    except EdgeSDKError:
        raise
    except Exception as exc:
        raise ExportError(f"ONNX Runtime could not apply {scheme.value}: {_first_line(exc)}") from exc


def _apply(
    src: Path, dest: Path, scheme: QuantScheme, calibration: CalibrationDataReader, plan: _Int8Plan | None
) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    if scheme is QuantScheme.NONE:
        shutil.copyfile(src, dest)
    elif scheme is QuantScheme.FP16:
        from onnxruntime.transformers.float16 import convert_float_to_float16

        # Inputs and outputs stay float32 so callers feed the same arrays to every variant.
        onnx.save(convert_float_to_float16(onnx.load(str(src)), keep_io_types=True), str(dest))
    elif plan is None:
        raise ExportError(f"no int8 plan for {scheme.value}")  # unreachable: export() makes one for int8
    elif scheme is QuantScheme.INT8_DYNAMIC:
        quantize_dynamic(
            str(src),
            str(dest),
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=list(plan.recipe.op_types) if plan.recipe.op_types else None,
            nodes_to_exclude=plan.excluded(),
        )
    else:
        quantize_static(
            str(src),
            str(dest),
            calibration,
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=list(plan.recipe.op_types) if plan.recipe.op_types else None,
            nodes_to_exclude=plan.excluded(),
            calibrate_method=_ORT_METHOD[plan.method],
            calibration_cache_path=plan.calibration_cache,
        )


class _CalibrationReader(CalibrationDataReader):
    """Feeds calibration arrays to ORT in batches along each input's sample axis (unbatched inputs whole)."""

    def __init__(self, arrays: dict[str, np.ndarray], specs: tuple[TensorSpec, ...]) -> None:
        self._arrays, self._specs = arrays, specs
        self._batches: Iterator[dict[str, np.ndarray]] | None = None

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._batches is None:  # built lazily: only static quantization reads calibration data
            if not self._arrays:
                raise ExportError("static int8 needs calibration data: pass an .npz or give the model example inputs")
            self._batches = iter(chunks(self._arrays, self._specs, CALIBRATION_BATCH))
        return next(self._batches, None)
