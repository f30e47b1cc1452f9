"""The digits CNN and a transformer block through ExecuTorch (XNNPACK): accuracy, sizes, delegation, failures."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import edge_sdk
from edge_sdk.errors import ExportError, InputError, ModelSourceError

pytestmark = pytest.mark.slow

SCHEMES = ["none", "int8-static", "int8-dynamic"]


@pytest.fixture(scope="module")
def et_bundle(tmp_path_factory, digits):
    """The digits CNN through ExecuTorch with every quantization it takes, converted once."""
    return edge_sdk.convert(
        "zoo:digits-cnn",
        backend="executorch",
        quantize=SCHEMES,
        eval_data=({"input": digits.test_x}, digits.test_y),
        calibration={"input": digits.train_x[:512]},
        profile=["pixel8"],
        output=tmp_path_factory.mktemp("executorch") / "digits-cnn",
    )


def _encoder_block() -> nn.Module:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(d_model=32, nhead=4, dim_feedforward=64, dropout=0.0, batch_first=True)
    return layer.eval()


@pytest.fixture(scope="module")
def encoder_inputs() -> dict[str, np.ndarray]:
    return {"input": np.random.default_rng(0).standard_normal((4, 8, 32)).astype(np.float32)}


@pytest.fixture(scope="module")
def encoder_bundle(tmp_path_factory, encoder_inputs):
    return edge_sdk.convert(
        _encoder_block(), encoder_inputs, backend="executorch", output=tmp_path_factory.mktemp("enc") / "enc"
    )


def _delegation(bundle, variant_id: str) -> dict:
    variant = bundle.variant(variant_id)
    entry = next(f for f in variant.files if f.path.endswith("delegation.json"))
    return json.loads(bundle.path_of(entry).read_text())


def test_each_quantization_is_within_its_stored_tolerance(et_bundle):
    by_id = {v.id: v for v in et_bundle.variants}
    assert set(by_id) == {f"executorch-{s}" for s in SCHEMES}
    for v in by_id.values():
        assert v.accuracy.passed, (v.id, v.accuracy)
        acc = v.accuracy.metric("accuracy")
        assert acc is not None and acc.reference is not None and acc.reference > 0.9
        assert acc.value >= acc.reference - acc.tolerance
        assert v.accuracy.samples == 360
        assert v.runtime.package == "executorch" and v.runtime.extra == "executorch"
    assert by_id["executorch-none"].accuracy.metric("max_rel_error").value < 1e-4


def test_sizes_are_in_the_manifest_and_int8_is_smaller(et_bundle):
    pte = {v.id: next(f.size for f in v.files if f.path.endswith(".pte")) for v in et_bundle.variants}
    for v in et_bundle.variants:
        entry = next(f for f in v.files if f.path.endswith(".pte"))
        assert entry.size == et_bundle.path_of(entry).stat().st_size > 10_000
    assert pte["executorch-int8-static"] < 0.45 * pte["executorch-none"]
    assert pte["executorch-int8-dynamic"] < 0.45 * pte["executorch-none"]


def test_delegation_report_is_recorded_for_each_variant(et_bundle):
    for v in et_bundle.variants:
        report = _delegation(et_bundle, v.id)
        assert report["delegated_by_operator"]["aten.convolution"] == 2
        assert report["delegated_by_operator"]["aten.linear"] == 2
        assert report["delegated_share_flops"] > 0.99, report  # the CNN runs (almost) entirely in XNNPACK
        assert report["delegated_subgraphs"] >= 1
        opts = v.recipe.options
        assert float(opts["delegated_share_flops"]) == pytest.approx(report["delegated_share_flops"], abs=1e-4)
        assert json.loads(opts["delegation"])["delegated"] == report["delegated_by_operator"]
        # With a dynamic batch the flatten stays a portable view: visible, named, and negligible in compute.
        assert set(report["portable_by_operator"]) <= {"aten.view_copy"}


def test_fp32_variant_matches_eager_torch(et_bundle, digits_model, sample):
    with torch.no_grad():
        expected = digits_model(torch.from_numpy(sample["input"])).numpy()
    with edge_sdk.load(et_bundle, "executorch-none") as session:
        got = session.run(sample)["output"]
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_any_batch_size_runs_including_beyond_the_memory_plan(et_bundle, digits, digits_model):
    x = np.concatenate([digits.test_x, digits.test_x[:40]])  # 400 > the 256 the program was planned for
    with torch.no_grad():
        expected = digits_model(torch.from_numpy(x)).numpy()
    with edge_sdk.load(et_bundle, "executorch-none", threads=2) as session:
        for n in (1, 3, 256, 400):
            np.testing.assert_allclose(session.run({"input": x[:n]})["output"], expected[:n], atol=1e-4)


def test_the_fast_path_still_checks_what_a_call_gives_it(et_bundle, digits, digits_model):
    # A shape is sent straight to the binding only once the full path accepted it within the planned batch:
    # after fast calls, a wrong shape, a wrong dtype, a strided view and a batch past the plan are each still
    # refused or answered as on the first call. (check=False leaves shapes to the caller: ExecuTorch itself only
    # bounds a dynamic input's element count, so a wrong 9x9 image would run.)
    x = digits.test_x[:4]
    with torch.no_grad():
        expected = digits_model(torch.from_numpy(digits.test_x[:300])).numpy()
    with edge_sdk.load(et_bundle, "executorch-none") as session:
        for _ in range(3):  # the first call takes the full path, the next ones the fast one
            np.testing.assert_allclose(session.run({"input": x})["output"], expected[:4], atol=1e-4)
        with pytest.raises(InputError, match="shape"):
            session.run({"input": np.zeros((4, 1, 9, 9), np.float32)})
        with pytest.raises(InputError, match="dtype float64, expected float32"):
            session.run({"input": x.astype(np.float64)}, check=False)
        strided = digits.test_x[:8:2]  # the same shape as x, not contiguous
        np.testing.assert_allclose(session.run({"input": strided})["output"], expected[:8:2], atol=1e-4)
        big = digits.test_x[:300]  # over the 256 planned: sliced, with or without checks
        np.testing.assert_allclose(session.run({"input": big}, check=False)["output"], expected, atol=1e-4)
        np.testing.assert_allclose(session.run({"input": big})["output"], expected, atol=1e-4)


def test_an_answer_is_the_callers_own_not_a_view_of_the_engine(et_bundle, digits):
    # The binding hands back outputs as views of the program's buffers (no clone): each run copies them once,
    # so an earlier answer must not change when the next run writes those buffers again.
    x = digits.test_x
    with edge_sdk.load(et_bundle, "executorch-int8-static") as session:
        # contiguous: the fast path once a shape is known; strided views: the full path every time
        for a, b in ((x[:1], x[5:6]), (x[:3], x[5:8]), (x[:8:2], x[5:13:2])):
            session.run({"input": a})  # the first call of a shape takes the full path
            first = session.run({"input": a})["output"]
            kept = first.copy()
            second = session.run({"input": b})["output"]
            np.testing.assert_array_equal(first, kept)
            assert not np.array_equal(first, second)
            assert first.flags.writeable


def test_golden_set_rechecks_on_this_machine(et_bundle):
    for v in et_bundle.variants:
        assert edge_sdk.check_golden(et_bundle, v.id).passed, v.id


def test_one_convert_makes_onnx_and_executorch_variants(tmp_path, digits, digits_model):
    bundle = edge_sdk.convert(
        digits_model,
        {"input": digits.train_x[:64]},
        backend="onnx,executorch",
        eval_data=({"input": digits.test_x}, digits.test_y),
        output=tmp_path / "b",
    )
    ids = {v.id for v in bundle.variants}
    assert ids == {"onnx-none", "executorch-none"}
    assert all(v.accuracy.passed for v in bundle.variants)
    onnx_out = edge_sdk.load(bundle, "onnx-none").run({"input": digits.test_x[:16]})["output"]
    et_out = edge_sdk.load(bundle, "executorch-none").run({"input": digits.test_x[:16]})["output"]
    np.testing.assert_allclose(et_out, onnx_out, atol=1e-4)


def test_transformer_block_runs_with_partial_delegation(encoder_bundle, encoder_inputs):
    v = encoder_bundle.variant("executorch-none")
    assert v.accuracy.passed, v.accuracy
    report = _delegation(encoder_bundle, v.id)
    assert report["portable_ops"] > 0 and report["delegated_ops"] > 0
    assert "aten.native_layer_norm" in report["portable_by_operator"], report["portable_by_operator"]
    assert report["delegated_by_operator"].get("aten.linear", 0) >= 4  # q/k/v/out projections and the FFN
    assert 0.5 < report["delegated_share_flops"] < 1.0
    assert "aten.native_layer_norm" in v.recipe.options["portable_operators"]
    with torch.no_grad():
        expected = _encoder_block()(torch.from_numpy(encoder_inputs["input"])).numpy()
    got = edge_sdk.load(encoder_bundle).run(encoder_inputs)["output"]
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_min_delegated_refuses_a_partly_delegated_model_from_the_cli(tmp_path):
    from typer.testing import CliRunner

    from edge_sdk.apps.cli.main import app

    script = tmp_path / "enc.py"
    script.write_text(
        "import torch\nfrom torch import nn\n"
        "def build():\n    torch.manual_seed(0)\n"
        "    return nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True).eval()\n"
    )
    out = tmp_path / "b"
    args = ["convert", f"{script}:build", "--input-shape", "1x8x32", "-b", "executorch", "-o", str(out)]
    refused = CliRunner().invoke(app, [*args, "--min-delegated", "0.99"])
    assert refused.exit_code == 1
    assert "below min_delegated=0.99" in refused.output and "aten.native_layer_norm" in refused.output
    assert not out.exists()
    accepted = CliRunner().invoke(app, [*args, "--min-delegated", "0.5"])
    assert accepted.exit_code == 0, accepted.output
    assert "of compute in" in accepted.output  # the delegated share is shown, not hidden


def test_data_dependent_control_flow_is_named(tmp_path):
    class Branchy(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.sum() > 0:
                return x * 2
            return x - 1

    x = np.ones((2, 4), np.float32)
    with pytest.raises(ExportError) as info:
        edge_sdk.convert(Branchy(), {"input": x}, backend="executorch", output=tmp_path / "b")
    message = str(info.value)
    assert "data-dependent control flow" in message
    assert "`if x.sum() > 0:`" in message and "test_executorch.py" in message
    assert "--backend onnx" in message
    assert not (tmp_path / "b").exists()


def test_an_onnx_file_is_refused_with_the_alternative(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from converters.executorch_export import ExecuTorchExporter
    from converters.exporter import ExportRequest
    from converters.sources import OnnxFileSource
    from edge_sdk.types import QuantScheme

    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4]) for n in ("x", "y")]
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [io[0]], [io[1]])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]), str(path))
    with pytest.raises(ModelSourceError, match=r"cannot read a 'onnx' source.*--backend onnx"):
        ExecuTorchExporter().export(ExportRequest(OnnxFileSource(path), QuantScheme.NONE, tmp_path))


def test_a_model_that_fixes_its_batch_gets_a_fixed_batch_spec(tmp_path):
    class FixedBatch(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(16, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x.reshape(4, 16))  # only batch 4 traces: torch.export refuses a dynamic batch

    torch.manual_seed(0)
    model = FixedBatch().eval()
    x = np.random.default_rng(1).standard_normal((10, 16)).astype(np.float32)
    bundle = edge_sdk.convert(model, {"input": x[:4]}, backend="executorch", output=tmp_path / "b")
    v = bundle.variant("executorch-none")
    assert v.inputs[0].shape == (4, 16) and v.outputs[0].shape == (4, 3)
    assert v.recipe.options["max_batch"] == "4" and v.accuracy.passed
    with edge_sdk.load(bundle) as session:
        with torch.no_grad():
            expected = model(torch.from_numpy(x[4:8])).numpy()
        np.testing.assert_allclose(session.run({"input": x[4:8]})["output"], expected, atol=1e-5)
        with pytest.raises(InputError, match=r"expected input: float32\[4x16\]"):
            session.run({"input": x[:3]})


def test_a_single_example_still_gives_a_dynamic_batch(tmp_path, digits_model, digits):
    from converters.executorch_export import ExecuTorchExporter
    from converters.exporter import ExportRequest
    from converters.sources import TorchSource
    from edge_sdk.types import QuantScheme

    source = TorchSource(digits_model, {"input": digits.train_x[:1]})
    result = ExecuTorchExporter().export(ExportRequest(source, QuantScheme.NONE, tmp_path))
    assert result.inputs[0].shape == ("batch", 1, 8, 8) and result.outputs[0].shape == ("batch", 10)
    assert result.recipe.options["max_batch"] == "256"
    assert set(result.files) == {"model.pte", "delegation.json"}
