"""Which nodes of an ONNX graph ONNX Runtime quantizes, chosen by what kind of model the graph is.

A transformer quantizes well only where the weights are: its MatMul/Gemm projections. LayerNorm, Softmax, GELU,
the embedding lookup and the attention-score products (query × key, scores × value: both operands are
activations, one of them a softmax) stay float, as every production recipe does (ORT's own transformer tooling,
NNCF, LiteRT). A CNN or an MLP takes ONNX Runtime's default set. Weights are per-channel in both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from edge_sdk.types import CalibrationMethod

_WEIGHT_OPS = ("MatMul", "Gemm", "Conv", "ConvTranspose")
_TRANSFORMER_MARKERS = ("Softmax",)
_NORM_OPS = ("LayerNormalization", "SimplifiedLayerNormalization", "ReduceMean")
DEFAULT_METHOD = {  # outliers in transformer activations make min/max ranges coarse; a percentile clips the tail
    "transformer": CalibrationMethod.PERCENTILE,
    "cnn": CalibrationMethod.MINMAX,
    "mlp": CalibrationMethod.MINMAX,
}


@dataclass(frozen=True)
class Layer:
    """One node that carries weights and can be quantized or kept float."""

    name: str
    op: str
    weight: str  # the initializer holding its weights
    weight_bytes: int  # float32 bytes of that initializer


@dataclass(frozen=True)
class GraphRecipe:
    kind: str  # transformer | cnn | mlp
    layers: tuple[Layer, ...]  # what may be quantized
    op_types: tuple[str, ...] | None  # what ORT quantizes (None: its defaults)
    always_float: tuple[str, ...]  # nodes the recipe keeps float whatever the bound (attention scores)

    def describe(self) -> str:
        kept = (
            "LayerNorm, Softmax, GELU, embeddings and attention scores in float" if self.kind == "transformer" else ""
        )
        ops = ", ".join(self.op_types) if self.op_types else "ONNX Runtime's default operators"
        return f"{self.kind}: quantize {ops}" + (f"; {kept}" if kept else "")


def recipe_for(path: Path) -> GraphRecipe:
    model = onnx.load(str(path), load_external_data=False)
    graph = model.graph
    weights = {init.name: init for init in graph.initializer}
    constants = _constant_outputs(graph, weights)
    ops = {node.op_type for node in graph.node}
    if ops & set(_TRANSFORMER_MARKERS) and "MatMul" in ops and ops & set(_NORM_OPS):
        kind = "transformer"
    elif ops & {"Conv", "ConvTranspose"}:
        kind = "cnn"
    else:
        kind = "mlp"
    layers, activation_products = [], []
    for node in graph.node:
        if node.op_type not in _WEIGHT_OPS:
            continue
        weight = next((i for i in node.input[1:2] if i in constants), None)
        if weight is None:
            activation_products.append(node.name)  # x @ y of two activations: attention scores
            continue
        layers.append(Layer(node.name, node.op_type, constants[weight], _float_bytes(weights.get(constants[weight]))))
    op_types = ("MatMul", "Gemm") if kind == "transformer" else None
    return GraphRecipe(kind, tuple(layers), op_types, tuple(activation_products) if kind == "transformer" else ())


def _constant_outputs(graph: onnx.GraphProto, weights: dict[str, onnx.TensorProto]) -> dict[str, str]:
    """Tensor name -> the initializer it comes from: weights, and weights passed through Transpose/Cast/Identity."""
    origin = {name: name for name in weights}
    for node in graph.node:
        if node.op_type in ("Transpose", "Cast", "Identity", "Reshape") and node.input and node.input[0] in origin:
            origin[node.output[0]] = origin[node.input[0]]
    return origin


def _float_bytes(init: onnx.TensorProto | None) -> int:
    if init is None:
        return 0
    return int(np.prod(init.dims, dtype=np.int64)) * 4


def layer_bytes(path: Path, layers: tuple[Layer, ...]) -> int:
    """Bytes the given layers' weights take in a (quantized) model: the int8 copy if quantized, else the float one."""
    model = onnx.load(str(path), load_external_data=False)
    sizes = {init.name: numpy_helper.to_array(init).nbytes for init in model.graph.initializer}
    total = 0
    for layer in layers:
        total += sizes.get(layer.weight, sizes.get(f"{layer.weight}_quantized", 0))
    return total
