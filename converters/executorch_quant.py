"""PT2E int8 for XNNPACK, with a recipe per model kind and per-module float exceptions.

A CNN or MLP is quantized everywhere XNNPACK's quantizer has a pattern (convolutions, linears, adds, pools). A
transformer is quantized only in its Linear modules: the global quantizer also annotates the attention-mask
arithmetic, whose index tensors then turn float ("IndexError: tensors used as indices must be long") and whose
softmax and LayerNorm lose precision for nothing. Layers the accuracy-aware search keeps float are simply left
out of the per-module configuration.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from converters.sources import TorchSource
from converters.verify import MAX_CHUNK
from edge_sdk.errors import ConfigError, ExportError, choices
from edge_sdk.types import QuantScheme

CALIBRATION_BATCH = 32
MAX_BATCH = MAX_CHUNK  # the memory plan of a dynamic-batch program holds this many samples at most
_WEIGHT_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def module_kind(module: nn.Module) -> str:
    """'transformer' when it embeds tokens, normalizes layers or attends; else 'cnn' or 'mlp'."""
    mods = list(module.modules())
    if any(isinstance(m, nn.Embedding | nn.LayerNorm | nn.MultiheadAttention) for m in mods):
        return "transformer"
    if any(isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d) for m in mods):
        return "cnn"
    return "mlp"


def weight_layers(module: nn.Module) -> tuple[str, ...]:
    """Names of the modules that hold weights and can be kept float, largest first."""
    named = [(n, m) for n, m in module.named_modules() if n and isinstance(m, _WEIGHT_MODULES)]
    named.sort(key=lambda nm: -sum(p.numel() for p in nm[1].parameters(recurse=False)))
    return tuple(n for n, _ in named)


def quantize(
    source: TorchSource,
    program: Any,
    args: tuple[torch.Tensor, ...],
    scheme: QuantScheme,
    calibration: dict[str, np.ndarray],
    dynamic_batch: bool,
    keep_float: tuple[str, ...] = (),
) -> tuple[Any, dict[str, str]]:
    """The quantized program (re-exported) and what the recipe records about it."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import get_symmetric_quantization_config
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    is_dynamic = scheme is QuantScheme.INT8_DYNAMIC
    config = get_symmetric_quantization_config(is_per_channel=True, is_dynamic=is_dynamic)
    kind = module_kind(source.module)
    layers = weight_layers(source.module)
    unknown = [n for n in keep_float if n not in layers]
    if unknown:
        raise ConfigError(f"cannot keep {unknown} in float: not a quantizable module; valid: {choices(layers)}")
    quantizer = _integer_safe_quantizer()
    if kind == "transformer":  # Linear modules only, each by name (so a kept one is simply not named)
        for name in layers:
            if name not in keep_float and isinstance(source.module.get_submodule(name), nn.Linear):
                quantizer.set_module_name(name, config)
    else:
        quantizer.set_global(config)
        for name in keep_float:
            quantizer.set_module_name(name, None)
    recipe = {
        "model_kind": kind,
        "recipe": "quantize Linear modules only" if kind == "transformer" else "XNNPACK quantizer's default patterns",
        "per_channel": "true",
    }
    if keep_float:
        recipe["float_layers"] = ",".join(keep_float)
    try:
        prepared = prepare_pt2e(program.module(), quantizer)
        with torch.no_grad():
            names = list(source.example_inputs)
            for batch in _calibration_batches(calibration, names, args, dynamic_batch, is_dynamic):
                prepared(*batch)
        converted = convert_pt2e(prepared)
        if dynamic_batch:
            return torch.export.export(converted, args, dynamic_shapes=dynamic_shapes(source, args)), recipe
        return torch.export.export(converted, args), recipe
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(
            f"{source.describe()}: the PT2E {scheme.value} quantization for XNNPACK failed: {first_line(exc)}. "
            f"Try --quantize none, or --backend onnx."
        ) from exc


def _integer_safe_quantizer() -> Any:
    """XNNPACK's quantizer turns every scalar operand of add/mul into a float32 constant before annotating, also in
    integer arithmetic: BERT's `arange + 0` for the attention-mask indices then becomes float, and `aten.index`
    fails ("tensors used as indices must be long"). Give such constants the integer dtype of their result."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer

    class IntegerSafeQuantizer(XNNPACKQuantizer):
        def transform_for_annotation(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            model = super().transform_for_annotation(model)
            for node in model.graph.nodes:
                if node.op != "get_attr" or not str(node.target).startswith("_tensor_constant_"):
                    continue
                dtypes = {getattr(u.meta.get("val"), "dtype", None) for u in node.users}
                dtype = dtypes.pop() if len(dtypes) == 1 else None
                if not isinstance(dtype, torch.dtype) or dtype.is_floating_point:
                    continue
                value = getattr(model, node.target).to(dtype)
                setattr(model, node.target, value)
                node.meta["val"] = node.meta["val"].fake_mode.from_tensor(value, static_shapes=True)
            return model

    return IntegerSafeQuantizer()


def dynamic_shapes(source: TorchSource, args: tuple[torch.Tensor, ...]) -> tuple[dict[int, Any], ...]:
    """The batch (1..MAX_BATCH) and the source's other dynamic axes (e.g. a sequence, 1..its bound)."""
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    extra = {axis: torch.export.Dim(name, min=1, max=size) for axis, (name, size) in source.dynamic_axes.items()}
    return tuple({0: batch, **extra} for _ in args)


def as_tensor(array: np.ndarray) -> torch.Tensor:
    # A size-1 dim makes numpy's strides ambiguous; torch.export would then record a channels-last dim order
    # that XNNPACK rejects at run time ("Propagating input shapes failed"). Force the canonical layout.
    return torch.from_numpy(np.ascontiguousarray(array)).clone(memory_format=torch.contiguous_format)


def first_line(exc: BaseException) -> str:
    """The first meaningful line of an exporter's error (torch.export's start with blank lines and banners)."""
    for line in str(exc).strip().splitlines():
        text = line.strip()
        if text and not set(text) <= set("=-*#"):
            return f"{type(exc).__name__}: {text}"
    return type(exc).__name__


def _calibration_batches(
    arrays: dict[str, np.ndarray], names: list[str], args: tuple[torch.Tensor, ...], dynamic: bool, skip: bool
) -> Iterator[tuple[torch.Tensor, ...]]:
    if skip:  # dynamic quantization observes nothing ahead of time: one pass to trace the observers is enough
        yield args
        return
    missing = [n for n in names if n not in arrays]
    if missing:
        raise ExportError(f"calibration data lacks inputs {missing}; the model takes {names}")
    count = len(arrays[names[0]])
    size = CALIBRATION_BATCH if dynamic else int(args[0].shape[0])
    stop = count if dynamic else count - size + 1
    if stop <= 0:
        raise ExportError(f"static int8 needs at least {size} calibration samples (the fixed batch); got {count}")
    for i in range(0, stop, size):
        yield tuple(as_tensor(arrays[n][i : i + size]) for n in names)
