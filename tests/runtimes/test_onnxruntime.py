"""The ONNX Runtime adapter: int8 results that do not depend on the host CPU's int8 kernels."""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edge_sdk.bundle import FileEntry, Recipe, RuntimeRequirement, Variant  # noqa: E402
from edge_sdk.bundle.files import sha256_file  # noqa: E402
from edge_sdk.types import Backend, DType, QuantScheme, TensorSpec  # noqa: E402
from runtimes import get_runtime  # noqa: E402

K, M = 256, 16
W_SCALE = np.float32(0.01)


def _int8_matmul_model(path: Path, weights: np.ndarray) -> None:
    """x -> DynamicQuantizeLinear -> MatMulInteger(full-range int8 weights) -> float: what int8-dynamic exports."""
    nodes = [
        helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xzp"]),
        helper.make_node("MatMulInteger", ["xq", "w", "xzp", "wzp"], ["acc"]),
        helper.make_node("Cast", ["acc"], ["accf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["xs", "ws"], ["scale"]),
        helper.make_node("Mul", ["accf", "scale"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "int8",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", M])],
        initializer=[
            numpy_helper.from_array(weights, "w"),
            numpy_helper.from_array(np.int8(0), "wzp"),
            numpy_helper.from_array(W_SCALE, "ws"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)


def _exact_int8(x: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.float32]:
    """The ONNX spec's arithmetic with exact int32 accumulation; also one activation quantization step."""
    lo, hi = np.float32(min(0.0, x.min())), np.float32(max(0.0, x.max()))
    scale = np.float32((hi - lo) / np.float32(255))
    zero = np.clip(np.rint(-lo / scale), 0, 255)
    xq = np.clip(np.rint(x / scale) + zero, 0, 255).astype(np.int32)
    acc = (xq - int(zero)) @ weights.astype(np.int32)
    return acc.astype(np.float32) * (scale * W_SCALE), scale


def _variant(path: Path) -> Variant:
    return Variant(
        id="onnx-int8-dynamic",
        backend=Backend.ONNX,
        files=(FileEntry(path=path.name, sha256=sha256_file(path), size=path.stat().st_size),),
        inputs=(TensorSpec(name="x", dtype=DType.FLOAT32, shape=("batch", K)),),
        outputs=(TensorSpec(name="y", dtype=DType.FLOAT32, shape=("batch", M)),),
        recipe=Recipe(quantization=QuantScheme.INT8_DYNAMIC, precision="int8"),
        runtime=RuntimeRequirement(package="onnxruntime", version="1.31.1", extra="onnx"),
    )


def test_int8_matmul_accumulates_exactly_on_any_cpu(tmp_path):
    # Full-range weights and all-positive activations: on an AVX2-only CPU, ORT's default kernel adds pairs of
    # u8×s8 products in int16 (|255·127·2| > 32767) and saturates; the SDK's session must not.
    rng = np.random.default_rng(0)
    weights = rng.choice(np.array([-127, -120, 120, 127], dtype=np.int8), size=(K, M))
    x = np.abs(rng.normal(size=(8, K))).astype(np.float32) * 3
    path = tmp_path / "int8.onnx"
    _int8_matmul_model(path, weights)
    expected, x_scale = _exact_int8(x, weights)

    with get_runtime(Backend.ONNX).load(_variant(path), tmp_path) as session:
        got = session.run({"x": x})["y"]

    # The bound is arithmetic, not measured: besides float rounding of the scales, an activation sitting on a
    # rounding boundary may land one quantization step away (two such elements per dot product, |w| <= 127).
    # One saturated int16 pair is off by thousands of steps.
    step = float(x_scale * W_SCALE) * 127
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=2 * step)


@pytest.mark.skipif(
    platform.machine().lower() not in {"x86_64", "amd64"}, reason="the option only changes x86 int8 kernels"
)
def test_sessions_on_x86_ask_for_exact_int8_accumulation(tmp_path):
    path = tmp_path / "int8.onnx"
    _int8_matmul_model(path, np.ones((K, M), dtype=np.int8))
    with get_runtime(Backend.ONNX).load(_variant(path), tmp_path) as session:
        options = session._session.get_session_options()  # type: ignore[attr-defined]
        assert options.get_session_config_entry("session.x64quantprecision") == "1"
