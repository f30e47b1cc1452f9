"""The digits CNN through ONNX Runtime: measured accuracy, sizes, outputs against eager torch, bad models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import edge_sdk
from edge_sdk.errors import (
    AccuracyGateError,
    BackendUnavailableError,
    ConfigError,
    InputError,
    ModelSourceError,
    ProfileError,
    RuntimeFailure,
)

pytestmark = pytest.mark.slow


def test_each_quantization_is_within_its_stored_tolerance(onnx_bundle):
    by_id = {v.id: v for v in onnx_bundle.variants}
    assert set(by_id) == {"onnx-none", "onnx-int8-dynamic", "onnx-int8-static", "onnx-fp16"}
    for v in by_id.values():
        acc = v.accuracy.metric("accuracy")
        assert acc is not None and acc.reference is not None
        assert acc.reference > 0.9, "the digits CNN should be a real classifier"
        assert acc.value >= acc.reference - acc.tolerance
        assert v.accuracy.samples == 360


def test_quantized_variants_are_smaller(onnx_bundle):
    size = {v.id: v.size_bytes for v in onnx_bundle.variants}
    assert size["onnx-int8-static"] < 0.45 * size["onnx-none"]
    assert size["onnx-int8-dynamic"] < 0.45 * size["onnx-none"]
    assert size["onnx-fp16"] < 0.6 * size["onnx-none"]


def test_fp32_variant_matches_eager_torch(onnx_bundle, digits_model, sample):
    with torch.no_grad():
        expected = digits_model(torch.from_numpy(sample["input"])).numpy()
    with edge_sdk.load(onnx_bundle, "onnx-none") as session:
        got = session.run(sample)["output"]
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_golden_set_rechecks_on_this_machine(onnx_bundle):
    for v in onnx_bundle.variants:
        report = edge_sdk.check_golden(onnx_bundle, v.id)
        assert report.passed, (v.id, report)


def test_session_checks_inputs_against_the_spec(onnx_bundle):
    with edge_sdk.load(onnx_bundle) as session:
        with pytest.raises(InputError, match=r"shape 2x8x8, expected input: float32\[batchx1x8x8\]"):
            session.run({"input": np.zeros((2, 8, 8), np.float32)})
        with pytest.raises(InputError, match="dtype float64"):
            session.run({"input": np.zeros((2, 1, 8, 8))})
        with pytest.raises(InputError, match=r"missing \['input'\].*unknown \['image'\]"):
            session.run({"image": np.zeros((2, 1, 8, 8), np.float32)})
        assert session.run({"input": np.zeros((3, 1, 8, 8), np.float32)})["output"].shape == (3, 10)


def test_trusted_run_skips_shape_checks_but_still_refuses_a_wrong_dtype(onnx_bundle, sample):
    with edge_sdk.load(onnx_bundle, "onnx-none") as session:
        checked = session.run(sample)["output"]
        np.testing.assert_array_equal(session.run(sample, check=False)["output"], checked)
        # A wrong dtype would make the engine read garbage: refused even for a trusted caller, before the engine.
        with pytest.raises(InputError, match="dtype float64, expected float32"):
            session.run({"input": sample["input"].astype(np.float64)}, check=False)
        with pytest.raises(InputError, match=r"missing \['input'\]"):
            session.run({"image": sample["input"]}, check=False)
        # Shapes are the trusted caller's word: a wrong one reaches the engine, whose own error says so.
        with pytest.raises(RuntimeFailure):
            session.run({"input": np.zeros((2, 8, 8), np.float32)}, check=False)


def test_run_passes_the_callers_arrays_without_copying_them(onnx_bundle, sample):
    with edge_sdk.load(onnx_bundle, "onnx-none") as session:
        checked = session.check_inputs(dict(sample))
        assert checked["input"] is sample["input"]  # no per-call copy of the data


def test_every_variant_records_files_recipe_accuracy_and_fit(onnx_bundle):
    # Moved from tests/kernel (which now uses synthetic bundles): the converter fills these in for every variant.
    for v in onnx_bundle.manifest.variants:
        assert v.files and all(f.size > 0 and len(f.sha256) == 64 for f in v.files)
        assert v.accuracy is not None and v.accuracy.passed
        assert set(v.fit) == {"rpi5", "rpi4"}
        assert v.golden_outputs is not None


def test_fit_is_checked_for_each_profile(onnx_bundle):
    fit = onnx_bundle.variant("onnx-none").fit["rpi5"]
    assert fit.fits and fit.estimated_peak_bytes < fit.budget_bytes
    assert fit.estimated_peak_bytes > onnx_bundle.variant("onnx-none").size_bytes


def test_quantize_someone_elses_onnx(onnx_bundle, tmp_path, digits):
    """An .onnx exported elsewhere: quantized by ORT and gated against the original file run by ORT."""
    foreign = tmp_path / "foreign.onnx"
    foreign.write_bytes(onnx_bundle.path_of(onnx_bundle.variant("onnx-none").files[0]).read_bytes())
    bundle = edge_sdk.convert(
        str(foreign),
        backend="onnx",
        quantize="int8-static",
        output=tmp_path / "b",
        calibration={"input": digits.train_x[:256]},
        eval_data=({"input": digits.test_x}, digits.test_y),
    )
    v = bundle.variant("onnx-int8-static")
    assert bundle.manifest.source.kind == "onnx"
    assert v.accuracy.passed and v.accuracy.metric("accuracy").value > 0.9
    assert v.size_bytes < 0.45 * foreign.stat().st_size


def test_a_tight_tolerance_fails_with_the_numbers(tmp_path, digits, digits_model):
    # Calibrating on noise and demanding zero drop: the gate must refuse and say by how much.
    noise = np.random.default_rng(0).standard_normal((64, 1, 8, 8)).astype(np.float32) * 50
    with pytest.raises(AccuracyGateError, match=r"onnx-int8-static is outside.*max_rel_error"):
        edge_sdk.convert(
            digits_model,
            {"input": digits.train_x[:64]},
            backend="onnx",
            quantize="int8-static",
            calibration={"input": noise},
            eval_data=({"input": digits.test_x}, digits.test_y),
            max_accuracy_drop=0.0,
            output=tmp_path / "b",
        )
    assert not (tmp_path / "b").exists(), "a refused conversion must not leave a bundle behind"


def test_bad_model_file_is_refused(tmp_path):
    junk = tmp_path / "model.onnx"
    junk.write_bytes(b"\x00\x01 definitely not protobuf" * 100)
    with pytest.raises(ModelSourceError, match="not a valid ONNX model"):
        edge_sdk.convert(str(junk), backend="onnx", output=tmp_path / "b")


def test_bad_factory_and_options(tmp_path, digits_model, digits):
    with pytest.raises(ModelSourceError, match="does not exist"):
        edge_sdk.convert(str(tmp_path / "nope.py:build"), output=tmp_path / "b")
    script = tmp_path / "m.py"
    script.write_text("def build():\n    return 42\n")
    with pytest.raises(ModelSourceError, match="expected a torch.nn.Module"):
        edge_sdk.convert(f"{script}:build", np.zeros((1, 1, 8, 8), np.float32), output=tmp_path / "b")
    with pytest.raises(ModelSourceError, match=r"no callable 'make'.*\['build'\]"):
        edge_sdk.convert(f"{script}:make", output=tmp_path / "b")
    x = {"input": digits.train_x[:8]}
    with pytest.raises(ProfileError, match="Did you mean 'rpi5'"):
        edge_sdk.convert(digits_model, x, profile="rpi55", output=tmp_path / "b")
    with pytest.raises(ConfigError, match="unknown quantization 'int3'.*'int8-static'"):
        edge_sdk.convert(digits_model, x, quantize="int3", output=tmp_path / "b")
    # int4 is a scheme (ONNX GenAI's language models), but not one the tensor ONNX backend applies
    with pytest.raises(
        ConfigError, match="onnx backend cannot apply quantization 'int4'; it supports: .*'int8-static'"
    ):
        edge_sdk.convert(digits_model, x, quantize="int4", output=tmp_path / "b")
    with pytest.raises(ConfigError, match="unknown backend 'tensorrt'"):
        edge_sdk.convert(digits_model, x, backend="tensorrt", output=tmp_path / "b")


def test_missing_engine_names_the_extra(tmp_path, monkeypatch):
    from edge_sdk import registry
    from edge_sdk.types import Backend

    (tmp_path / "fake_adapter.py").write_text("import some_engine_that_is_not_installed\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    entry = registry.BackendEntry(
        engine="fake",
        runtime_extra="fake-extra",
        convert_extra="fake-extra",
        targets={registry.Role.RUNTIME: "fake_adapter:Runtime"},
    )
    monkeypatch.setitem(registry._REGISTRY, Backend.GGUF, entry)
    with pytest.raises(BackendUnavailableError, match=r"pip install 'edge-sdk\[fake-extra\]'"):
        registry.load(Backend.GGUF, registry.Role.RUNTIME)
