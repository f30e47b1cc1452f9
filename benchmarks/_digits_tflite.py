"""The digits CNN (converters.zoo) written as a float32 .tflite, so LiteRT runs the same model as the other engines.

The SDK has no torch -> TFLite converter (the tflite backend wraps existing files), so this writes the flatbuffer
with the schema module that ships inside ai-edge-litert, as tests/data/tflite/make_models.py does: RESHAPE
[N,1,8,8] -> [N,8,8,1] (one channel: the same bytes), two SAME 3x3 CONV_2D with fused ReLU, a 2x2 MAX_POOL_2D,
RESHAPE to [N,512] and two FULLY_CONNECTED. Torch flattens [C,H,W] and TFLite [H,W,C], so the first dense layer's
columns are permuted to match. The batch dimension is resizable.
"""

from __future__ import annotations

from pathlib import Path

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as s

F32, I32 = s.TensorType.FLOAT32, s.TensorType.INT32


class _Graph:
    def __init__(self) -> None:
        self.buffers: list[s.BufferT] = [s.BufferT()]  # buffer 0: the empty sentinel
        self.tensors: list[s.TensorT] = []

    def tensor(self, name: str, dtype: int, shape: list[int], data: np.ndarray | None = None) -> int:
        t = s.TensorT()
        t.name, t.type, t.shape, t.buffer = name, dtype, shape, 0
        if data is None:
            t.shapeSignature = [-1, *shape[1:]]  # activations: resizable batch
        else:
            buf = s.BufferT()
            buf.data = list(np.ascontiguousarray(data).tobytes())
            self.buffers.append(buf)
            t.buffer = len(self.buffers) - 1
        self.tensors.append(t)
        return len(self.tensors) - 1


def _op(code: int, inputs: list[int], output: int, options_type: int, options: object) -> s.OperatorT:
    op = s.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = code, inputs, [output]
    op.builtinOptionsType, op.builtinOptions = options_type, options
    return op


def digits_tflite(state: dict[str, np.ndarray]) -> bytes:
    """The flatbuffer of the digits CNN whose torch state_dict (as numpy) is `state`."""
    relu = s.ActivationFunctionType.RELU
    g = _Graph()
    x = g.tensor("input", F32, [1, 1, 8, 8])
    nhwc_shape = g.tensor("nhwc_shape", I32, [4], np.array([-1, 8, 8, 1], np.int32))
    nhwc = g.tensor("nhwc", F32, [1, 8, 8, 1])
    w0 = g.tensor("conv0_w", F32, [16, 3, 3, 1], state["features.0.weight"].transpose(0, 2, 3, 1))
    b0 = g.tensor("conv0_b", F32, [16], state["features.0.bias"])
    h0 = g.tensor("conv0", F32, [1, 8, 8, 16])
    w1 = g.tensor("conv1_w", F32, [32, 3, 3, 16], state["features.2.weight"].transpose(0, 2, 3, 1))
    b1 = g.tensor("conv1_b", F32, [32], state["features.2.bias"])
    h1 = g.tensor("conv1", F32, [1, 8, 8, 32])
    pooled = g.tensor("pool", F32, [1, 4, 4, 32])
    flat_shape = g.tensor("flat_shape", I32, [2], np.array([-1, 512], np.int32))
    flat = g.tensor("flat", F32, [1, 512])
    fc0 = state["classifier.1.weight"].reshape(64, 32, 4, 4).transpose(0, 2, 3, 1).reshape(64, 512)  # CHW -> HWC
    w2 = g.tensor("fc0_w", F32, [64, 512], fc0)
    b2 = g.tensor("fc0_b", F32, [64], state["classifier.1.bias"])
    h2 = g.tensor("fc0", F32, [1, 64])
    w3 = g.tensor("fc1_w", F32, [10, 64], state["classifier.3.weight"])
    b3 = g.tensor("fc1_b", F32, [10], state["classifier.3.bias"])
    y = g.tensor("output", F32, [1, 10])

    def reshape(shape: list[int]) -> s.ReshapeOptionsT:
        o = s.ReshapeOptionsT()
        o.newShape = shape
        return o

    def conv() -> s.Conv2DOptionsT:
        o = s.Conv2DOptionsT()
        o.padding, o.strideW, o.strideH, o.fusedActivationFunction = s.Padding.SAME, 1, 1, relu
        o.dilationWFactor = o.dilationHFactor = 1
        return o

    def pool() -> s.Pool2DOptionsT:
        o = s.Pool2DOptionsT()
        o.padding, o.strideW, o.strideH, o.filterWidth, o.filterHeight = s.Padding.VALID, 2, 2, 2, 2
        return o

    def fc(activation: int) -> s.FullyConnectedOptionsT:
        o = s.FullyConnectedOptionsT()
        o.fusedActivationFunction = activation
        return o

    B = s.BuiltinOptions
    ops = [
        _op(0, [x, nhwc_shape], nhwc, B.ReshapeOptions, reshape([-1, 8, 8, 1])),
        _op(1, [nhwc, w0, b0], h0, B.Conv2DOptions, conv()),
        _op(1, [h0, w1, b1], h1, B.Conv2DOptions, conv()),
        _op(2, [h1], pooled, B.Pool2DOptions, pool()),
        _op(0, [pooled, flat_shape], flat, B.ReshapeOptions, reshape([-1, 512])),
        _op(3, [flat, w2, b2], h2, B.FullyConnectedOptions, fc(relu)),
        _op(3, [h2, w3, b3], y, B.FullyConnectedOptions, fc(s.ActivationFunctionType.NONE)),
    ]
    codes = []
    for builtin in (s.BuiltinOperator.RESHAPE, s.BuiltinOperator.CONV_2D, s.BuiltinOperator.MAX_POOL_2D,
                    s.BuiltinOperator.FULLY_CONNECTED):  # fmt: skip
        code = s.OperatorCodeT()
        code.builtinCode = code.deprecatedBuiltinCode = builtin
        code.version = 1
        codes.append(code)
    sub = s.SubGraphT()
    sub.tensors, sub.inputs, sub.outputs, sub.operators, sub.name = g.tensors, [x], [y], ops, "main"
    sig = s.SignatureDefT()
    sig.signatureKey, sig.subgraphIndex = "serving_default", 0
    sig.inputs, sig.outputs = [_tmap("input", x)], [_tmap("output", y)]
    model = s.ModelT()
    model.version, model.description = 3, "edge-sdk digits CNN (benchmarks/_digits_tflite.py)"
    model.operatorCodes, model.subgraphs, model.buffers, model.signatureDefs = codes, [sub], g.buffers, [sig]
    builder = flatbuffers.Builder(1 << 16)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _tmap(name: str, index: int) -> s.TensorMapT:
    m = s.TensorMapT()
    m.name, m.tensorIndex = name, index
    return m


def write_digits_tflite(path: Path) -> Path:
    """The trained digits CNN as `path` (.tflite); checked against torch on the test digits before returning."""
    import torch
    from ai_edge_litert.interpreter import Interpreter

    from converters.zoo import digits_cnn, digits_data

    model = digits_cnn()
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    path.write_bytes(digits_tflite(state))
    x = digits_data().test_x[:32]
    interp = Interpreter(model_path=str(path), num_threads=1)
    interp.resize_tensor_input(interp.get_input_details()[0]["index"], list(x.shape), strict=True)
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], x)
    interp.invoke()
    got = interp.get_tensor(interp.get_output_details()[0]["index"])
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)  # float32, different summation order
    return path
