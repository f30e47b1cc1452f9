"""Write the small .tflite test models in this directory, with their float reference outputs.

No TensorFlow is needed: the models are written directly as TFLite flatbuffers with the schema module that
ships inside ai-edge-litert (`ai_edge_litert.schema_py_generated`) and `flatbuffers` (its dependency), so the
interpreter that runs them is the one the SDK uses. Regenerate with the project venv (extra `tflite`):

    .venv/bin/python tests/data/tflite/make_models.py

Models (a two-layer MLP, 8 -> 16 (ReLU) -> 4, weights from a fixed seed, batch dimension resizable):
- `mlp_float.tflite`: float32 in / float32 out.
- `mlp_int8.tflite`: fully int8 (weights, activations, input and output int8 with scale / zero point;
  int32 bias), as a post-training-quantized model from another toolchain would be.
- `mlp_reference.npz`: `x` (float32 [16, 8]) and `y` = the float MLP computed in numpy ([16, 4]), plus the
  weights, so a test can check the engine against arithmetic done outside it.

`tf_conv_int8.tflite` (a model from TensorFlow's own converter) is made by `make_tf_model.py`, in a scratch venv.
"""

from __future__ import annotations

from pathlib import Path

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as s

HERE = Path(__file__).parent
IN, HIDDEN, OUT = 8, 16, 4


def _weights() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(42)
    return {
        "w1": (rng.standard_normal((HIDDEN, IN)) * 0.5).astype(np.float32),  # TFLite FC: [out, in]
        "b1": (rng.standard_normal(HIDDEN) * 0.1).astype(np.float32),
        "w2": (rng.standard_normal((OUT, HIDDEN)) * 0.5).astype(np.float32),
        "b2": (rng.standard_normal(OUT) * 0.1).astype(np.float32),
    }


def forward(x: np.ndarray, w: dict[str, np.ndarray]) -> np.ndarray:
    h = np.maximum(x @ w["w1"].T + w["b1"], 0.0)
    return (h @ w["w2"].T + w["b2"]).astype(np.float32)


class _Graph:
    def __init__(self) -> None:
        self.buffers: list[s.BufferT] = [s.BufferT()]  # buffer 0 is the empty sentinel
        self.tensors: list[s.TensorT] = []

    def tensor(
        self,
        name: str,
        dtype: int,
        shape: list[int],
        data: np.ndarray | None = None,
        quant: tuple[float, int] | None = None,
    ) -> int:
        t = s.TensorT()
        t.name, t.type, t.shape = name, dtype, shape
        if shape and data is None:
            t.shapeSignature = [-1, *shape[1:]]  # activations: resizable batch
        t.buffer = 0
        if data is not None:
            buf = s.BufferT()
            buf.data = list(np.ascontiguousarray(data).tobytes())
            self.buffers.append(buf)
            t.buffer = len(self.buffers) - 1
        if quant is not None:
            q = s.QuantizationParametersT()
            q.scale, q.zeroPoint = [float(quant[0])], [int(quant[1])]
            t.quantization = q
        self.tensors.append(t)
        return len(self.tensors) - 1


def _fc(inputs: list[int], output: int, relu: bool) -> s.OperatorT:
    op = s.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, inputs, [output]
    op.builtinOptionsType = s.BuiltinOptions.FullyConnectedOptions
    opts = s.FullyConnectedOptionsT()
    opts.fusedActivationFunction = s.ActivationFunctionType.RELU if relu else s.ActivationFunctionType.NONE
    op.builtinOptions = opts
    return op


def _model(g: _Graph, x: int, y: int, ops: list[s.OperatorT], fc_version: int) -> bytes:
    sub = s.SubGraphT()
    sub.tensors, sub.inputs, sub.outputs, sub.operators, sub.name = g.tensors, [x], [y], ops, "main"
    code = s.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = s.BuiltinOperator.FULLY_CONNECTED
    code.version = fc_version
    sig = s.SignatureDefT()
    sig.signatureKey, sig.subgraphIndex = "serving_default", 0
    sig.inputs = [_tmap("x", x)]
    sig.outputs = [_tmap("y", y)]
    model = s.ModelT()
    model.version, model.description = 3, "edge-sdk test MLP (tests/data/tflite/make_models.py)"
    model.operatorCodes, model.subgraphs, model.buffers, model.signatureDefs = [code], [sub], g.buffers, [sig]
    builder = flatbuffers.Builder(4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _tmap(name: str, index: int) -> s.TensorMapT:
    m = s.TensorMapT()
    m.name, m.tensorIndex = name, index
    return m


def float_model(w: dict[str, np.ndarray]) -> bytes:
    g = _Graph()
    f32 = s.TensorType.FLOAT32
    x = g.tensor("x", f32, [1, IN])
    w1, b1 = g.tensor("w1", f32, [HIDDEN, IN], w["w1"]), g.tensor("b1", f32, [HIDDEN], w["b1"])
    h = g.tensor("h", f32, [1, HIDDEN])
    w2, b2 = g.tensor("w2", f32, [OUT, HIDDEN], w["w2"]), g.tensor("b2", f32, [OUT], w["b2"])
    y = g.tensor("y", f32, [1, OUT])
    return _model(g, x, y, [_fc([x, w1, b1], h, relu=True), _fc([h, w2, b2], y, relu=False)], fc_version=1)


def _act_quant(lo: float, hi: float) -> tuple[float, int]:
    """Asymmetric int8 parameters covering [lo, hi] (always including 0), as TFLite's converter chooses them."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = (hi - lo) / 255.0
    return scale, round(-128 - lo / scale)


def int8_model(w: dict[str, np.ndarray], calib: np.ndarray) -> bytes:
    h_float = np.maximum(calib @ w["w1"].T + w["b1"], 0.0)
    y_float = forward(calib, w)
    qx, qh, qy = (_act_quant(float(a.min()), float(a.max())) for a in (calib, h_float, y_float))
    g = _Graph()
    i8, i32 = s.TensorType.INT8, s.TensorType.INT32

    def weight(name: str, value: np.ndarray) -> tuple[int, float]:
        scale = float(np.abs(value).max()) / 127.0
        q = np.clip(np.round(value / scale), -127, 127).astype(np.int8)
        return g.tensor(name, i8, list(value.shape), q, (scale, 0)), scale

    def bias(name: str, value: np.ndarray, scale: float) -> int:
        return g.tensor(name, i32, list(value.shape), np.round(value / scale).astype(np.int32), (scale, 0))

    x = g.tensor("x", i8, [1, IN], quant=qx)
    w1, s1 = weight("w1", w["w1"])
    b1 = bias("b1", w["b1"], qx[0] * s1)
    h = g.tensor("h", i8, [1, HIDDEN], quant=qh)
    w2, s2 = weight("w2", w["w2"])
    b2 = bias("b2", w["b2"], qh[0] * s2)
    y = g.tensor("y", i8, [1, OUT], quant=qy)
    return _model(g, x, y, [_fc([x, w1, b1], h, relu=True), _fc([h, w2, b2], y, relu=False)], fc_version=4)


def main() -> None:
    w = _weights()
    x = np.random.default_rng(7).standard_normal((16, IN)).astype(np.float32)
    calib = np.random.default_rng(8).standard_normal((256, IN)).astype(np.float32)
    (HERE / "mlp_float.tflite").write_bytes(float_model(w))
    (HERE / "mlp_int8.tflite").write_bytes(int8_model(w, calib))
    np.savez(HERE / "mlp_reference.npz", x=x, y=forward(x, w), **w)


if __name__ == "__main__":
    main()
