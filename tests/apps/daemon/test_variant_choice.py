"""The daemon serves the variant the device should run: the one that fits the profile and passed its gate with
the best objective; `--variant` (serve or install) overrides; `/v1/models` says which and why."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from edge_sdk.apps.daemon.pool import DirectorySource

K, M = 1024, 2048  # an 8 MiB fp32 matrix: int8 (2 MiB) and fp32 (8 MiB) are MBs apart in the estimate
SMALL_BUDGET_MB = 95  # int8 (≈88 MiB) and fp16 (≈91.5 MiB) fit, fp32 (≈98 MiB) does not


def _matmul(path: Path, weights: np.ndarray) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("MatMul", ["x", "w32"], ["y"])]
    inits = [numpy_helper.from_array(weights, "w32")]
    if weights.dtype == np.float16:  # fp16 storage, fp32 arithmetic
        nodes.insert(0, helper.make_node("Cast", ["w16"], ["w32"], to=TensorProto.FLOAT))
        inits = [numpy_helper.from_array(weights, "w16")]
    graph = helper.make_graph(
        nodes, "mm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", M])], initializer=inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)


@pytest.fixture(scope="module")
def three_variants(tmp_path_factory):
    """fp32, int8 (ONNX Runtime's dynamic quantizer) and fp16 — the fp16 one recorded as failing its gate."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from edge_sdk.bundle import AccuracyReport, BundleWriter, Metric, Recipe, RuntimeRequirement, SourceInfo
    from edge_sdk.types import Backend, DType, QuantScheme, Task, TensorSpec

    work = tmp_path_factory.mktemp("variants")
    weights = np.random.default_rng(0).normal(size=(K, M)).astype(np.float32)
    _matmul(work / "fp32.onnx", weights)
    _matmul(work / "fp16.onnx", weights.astype(np.float16))
    quantize_dynamic(work / "fp32.onnx", work / "int8.onnx", weight_type=QuantType.QInt8)

    def report(passed: bool) -> AccuracyReport:
        metric = Metric(name="cosine", value=0.999 if passed else 0.9, tolerance=0.99, higher_is_better=True,
                        passed=passed)  # fmt: skip
        return AccuracyReport(reference="fp32", samples=8, metrics=(metric,), passed=passed)

    writer = BundleWriter(
        name="matmul", version="1.0.0", task=Task.TENSOR, created_by="test",
        source=SourceInfo(kind="onnx", digest="sha256:" + "0" * 64),
    )  # fmt: skip
    runtime = RuntimeRequirement(package="onnxruntime", version="1.31.1", extra="onnx")
    for vid, file, scheme, precision, passed in [
        ("onnx-none", "fp32.onnx", QuantScheme.NONE, "fp32", True),
        ("onnx-fp16", "fp16.onnx", QuantScheme.FP16, "fp16", False),
        ("onnx-int8-dynamic", "int8.onnx", QuantScheme.INT8_DYNAMIC, "int8", True),
    ]:
        writer.add_variant(
            variant_id=vid, backend=Backend.ONNX, files={"model.onnx": work / file},
            inputs=(TensorSpec(name="x", dtype=DType.FLOAT32, shape=("batch", K)),),
            outputs=(TensorSpec(name="y", dtype=DType.FLOAT32, shape=("batch", M)),),
            recipe=Recipe(quantization=scheme, precision=precision), runtime=runtime, accuracy=report(passed),
        )  # fmt: skip
    return writer.write(work / "bundle")


@pytest.fixture(scope="module")
def small_board(tmp_path_factory) -> Path:
    """A user's own board: the Raspberry Pi 4's profile with 95 MB for models."""
    from device_profiles.loader import load_profile

    data = load_profile("rpi4").model_dump(mode="json", by_alias=True, exclude_none=True)
    data.update(id="tiny-board", name="A board with little memory")
    data["memory"]["budget_mb"] = SMALL_BUDGET_MB
    path = tmp_path_factory.mktemp("profile") / "tiny-board.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _served(url: str) -> dict:
    entry = httpx.get(f"{url}/v1/models/matmul", timeout=30).json()
    x = {"x": {"dtype": "float32", "shape": [1, K], "data": [0.5] * K}}
    answer = httpx.post(f"{url}/v1/infer/matmul", json={"inputs": x}, timeout=60).json()
    assert answer["variant"] == entry["variant"]  # what /v1/models says is what runs
    return entry


def test_the_int8_variant_is_chosen_for_a_small_board_and_variant_overrides(serve_bundles, three_variants, small_board):
    with serve_bundles(DirectorySource([three_variants.root]), profile=str(small_board)) as url:
        entry = _served(url)
    assert entry["variant"] == "onnx-int8-dynamic", entry
    reason = entry["variant_reason"]
    assert "best for tiny-board" in reason and "budget 95.0 MB" in reason.replace("MiB", "MB")
    assert "onnx-fp16: failed its accuracy gate" in reason and "onnx-none: needs" in reason

    with serve_bundles(DirectorySource([three_variants.root]), variants={"matmul": "onnx-none"}) as url:
        entry = _served(url)
    assert entry["variant"] == "onnx-none" and "--variant" in entry["variant_reason"]


def test_install_variant_pins_what_the_store_serves(serve_bundles, three_variants, small_board, tmp_path):
    from edge_sdk.apps.cli.main import app
    from edge_sdk.apps.daemon.store_source import StoreSource

    runner = CliRunner()
    store = str(tmp_path / "store")
    refused = runner.invoke(app, ["install", str(three_variants.root), "--store", store, "--variant", "onnx-int4"])
    assert refused.exit_code == 1 and "no variant 'onnx-int4'" in refused.output and "onnx-none" in refused.output
    assert "matmul" not in runner.invoke(app, ["models", "--store", store]).output  # nothing installed
    done = runner.invoke(app, ["install", str(three_variants.root), "--store", store, "--variant", "onnx-none",
                               "--no-check"])  # fmt: skip
    assert done.exit_code == 0, done.output
    with serve_bundles(StoreSource(Path(store)), profile=str(small_board)) as url:
        assert _served(url)["variant"] == "onnx-none"  # the pin wins over the profile's choice


@pytest.mark.slow
def test_serve_command_takes_profile_and_variant(three_variants, small_board):
    from edge_sdk.apps.cli.main import app

    runner = CliRunner()

    bad = runner.invoke(app, ["serve", str(three_variants.root), "--variant", "matmul=onnx-int4"])
    assert bad.exit_code == 1 and "has no variant 'onnx-int4'; variants:" in bad.output
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "edge_sdk.cli", "serve", str(three_variants.root), "--port", str(port),
           "--profile", str(small_board), "--no-queue", "--telemetry-interval", "0"]  # fmt: skip
    for extra, expected in (([], "onnx-int8-dynamic"), (["--variant", "onnx-fp16"], "onnx-fp16")):
        proc = subprocess.Popen([*cmd, *extra], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"{url}/health/live", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            assert _served(url)["variant"] == expected
        finally:
            proc.terminate()
            proc.wait(timeout=30)
