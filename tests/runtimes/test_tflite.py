"""Existing .tflite models wrapped into bundles and run with LiteRT: a float MLP and a fully int8 one.

The models and their numpy reference outputs are in tests/data/tflite (see make_models.py there).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert")

import edge_sdk
from edge_sdk.errors import BackendUnavailableError, ConfigError, InputError, ModelSourceError
from edge_sdk.types import Backend, DType

DATA = Path(__file__).parents[1] / "data" / "tflite"


@pytest.fixture(scope="module")
def ref() -> dict[str, np.ndarray]:
    return dict(np.load(DATA / "mlp_reference.npz"))


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, ref):
    out = tmp_path_factory.mktemp("tflite")
    return {
        kind: edge_sdk.convert(
            str(DATA / f"mlp_{kind}.tflite"), {"x": ref["x"]}, backend="tflite", output=out / kind, name=f"mlp-{kind}"
        )
        for kind in ("float", "int8")
    }


def test_float_model_matches_numpy_reference(bundles, ref):
    variant = bundles["float"].variant(None)
    assert variant.id == "tflite-none" and variant.backend is Backend.TFLITE
    assert [Path(f.path).name for f in variant.files] == ["model.tflite"]
    assert variant.files[0].size == (DATA / "mlp_float.tflite").stat().st_size
    assert variant.runtime.package == "ai-edge-litert" and variant.runtime.extra == "tflite"
    assert variant.accuracy.passed
    with edge_sdk.load(bundles["float"], threads=1) as session:
        y = session.run({"x": ref["x"]})["y"]
    assert y.dtype == np.float32 and y.shape == (16, 4)
    np.testing.assert_allclose(y, ref["y"], rtol=1e-5, atol=1e-5)


def test_outputs_stay_the_callers_after_the_next_run(bundles, ref):
    # The interpreter reuses its output buffer on every invoke: a result handed out must not change with the next.
    with edge_sdk.load(bundles["float"], threads=1) as session:
        first = session.run({"x": ref["x"][:4]})["y"]
        kept = first.copy()
        session.run({"x": -ref["x"][:4]})
    np.testing.assert_array_equal(first, kept)


def test_int8_model_is_float32_at_the_api(bundles, ref):
    variant = bundles["int8"].variant(None)
    (inp,), (out,) = variant.inputs, variant.outputs
    assert (inp.name, inp.dtype, inp.shape) == ("x", DType.FLOAT32, ("batch", 8))
    assert (out.name, out.dtype, out.shape) == ("y", DType.FLOAT32, ("batch", 4))
    opts = variant.recipe.options
    assert opts["quantization.input.x"].startswith("int8 scale=")
    assert opts["quantization.output.y"].startswith("int8 scale=")
    with edge_sdk.load(bundles["int8"]) as session:
        y = session.run({"x": ref["x"]})["y"]
        with pytest.raises(InputError, match="dtype int8"):
            session.run({"x": ref["x"].astype(np.int8)})
    assert y.dtype == np.float32
    # int8 arithmetic, so not exact, but it must track the float model closely (and not be e.g. un-dequantized)
    err = np.abs(y - ref["y"]).max()
    assert 0 < err < 0.03 * np.abs(ref["y"]).max(), err
    assert np.corrcoef(y.ravel(), ref["y"].ravel())[0, 1] > 0.999


def test_int8_dequantizes_with_the_model_scale(bundles, ref):
    """Output values are multiples of the output scale, offset by the zero point: proof of real dequantization."""
    opts = bundles["int8"].variant(None).recipe.options["quantization.output.y"]
    fields = dict(part.split("=") for part in opts.split()[1:])
    scale, zero = float(fields["scale"]), int(fields["zero_point"])
    with edge_sdk.load(bundles["int8"]) as session:
        y = session.run({"x": ref["x"]})["y"]
    q = y / np.float32(scale) + zero
    np.testing.assert_allclose(q, np.round(q), atol=1e-3)
    assert q.min() >= -128 and q.max() <= 127


def test_batch_dimension_is_resized(bundles, ref):
    with edge_sdk.load(bundles["float"]) as session:
        one = session.run({"x": ref["x"][:1]})["y"]
        three = session.run({"x": ref["x"][:3]})["y"]
        again = session.run({"x": ref["x"][:1]})["y"]
    assert one.shape == (1, 4) and three.shape == (3, 4)
    np.testing.assert_allclose(three, ref["y"][:3], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(one, again)


def test_a_warm_session_still_refuses_what_does_not_match(bundles, ref):
    # After the first call an array goes straight to the interpreter's binding: what the model cannot take must
    # still be refused with the input's name and shape, on the checked path and on the trusted one.
    with edge_sdk.load(bundles["float"], threads=1) as session:
        for _ in range(3):
            y = session.run({"x": ref["x"][:2]})["y"]
        np.testing.assert_allclose(y, ref["y"][:2], rtol=1e-5, atol=1e-5)
        for check in (True, False):
            with pytest.raises(InputError, match="dtype"):
                session.run({"x": ref["x"][:2].astype(np.float64)}, check=check)
        with pytest.raises(InputError, match="shape"):
            session.run({"x": ref["x"][:2, :5]})  # a fixed dimension (8) wrong
        with pytest.raises(InputError, match="shape"):
            session.run({"x": ref["x"][:2].reshape(2, 2, 4)})
        strided = np.asfortranarray(ref["x"][:2])
        np.testing.assert_allclose(session.run({"x": strided})["y"], y, rtol=1e-6)
        np.testing.assert_allclose(session.run({"x": ref["x"][:2]}, check=False)["y"], y, rtol=1e-6)


@pytest.mark.parametrize("kind", ["float", "int8"])
def test_check_golden_passes(bundles, kind):
    report = edge_sdk.check_golden(bundles[kind])
    assert report.passed and report.samples > 0


def test_a_tflite_file_picks_the_tflite_backend_without_b(tmp_path):
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "edge_sdk.cli", "convert", str(DATA / "mlp_float.tflite"), "-o", str(tmp_path / "b")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert [v.id for v in edge_sdk.open_bundle(tmp_path / "b").variants] == ["tflite-none"]


def test_default_inputs_are_synthesized(tmp_path):
    bundle = edge_sdk.convert(str(DATA / "mlp_int8.tflite"), backend="tflite", output=tmp_path / "b")
    golden = bundle.golden()
    assert golden is not None and golden.inputs["x"].dtype == np.float32 and golden.inputs["x"].shape[1] == 8
    assert edge_sdk.check_golden(bundle).passed


def test_non_tflite_file_is_refused(tmp_path):
    bad = tmp_path / "notes.tflite"
    bad.write_bytes(b"this is not a flatbuffer at all")
    with pytest.raises(ModelSourceError, match="notes.tflite.*not a TFLite model"):
        edge_sdk.convert(str(bad), backend="tflite", output=tmp_path / "out")
    with pytest.raises(ModelSourceError, match="missing.tflite.*does not exist"):
        edge_sdk.convert(str(tmp_path / "missing.tflite"), backend="tflite", output=tmp_path / "out2")


def test_quantizing_a_wrapped_file_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="int8-static.*supports: 'none'"):
        edge_sdk.convert(str(DATA / "mlp_float.tflite"), backend="tflite", quantize="int8-static", output=tmp_path)


def test_tflite_backend_cannot_convert_a_torch_model(tmp_path):
    with pytest.raises(ModelSourceError, match="only wraps an existing .tflite"):
        edge_sdk.convert("zoo:digits-cnn", backend="tflite", output=tmp_path / "b")


def test_tensorflow_made_int8_cnn(tmp_path):
    """A file from TensorFlow's converter (int8 in/out, per-channel conv weights): signature names, float32 at
    the API, outputs close to the float Keras model's."""
    ref = np.load(DATA / "tf_conv_reference.npz")
    bundle = edge_sdk.convert(str(DATA / "tf_conv_int8.tflite"), {"image": ref["x"]}, backend="tflite", output=tmp_path)
    variant = bundle.variant(None)
    assert [s.describe() for s in variant.inputs] == ["image: float32[batchx8x8x1]"]
    assert [s.describe() for s in variant.outputs] == ["output_0: float32[batchx10]"]
    assert variant.recipe.options["quantization.input.image"].startswith("int8 scale=0.00392")  # 1/255
    with edge_sdk.load(bundle) as session:
        y = session.run({"image": ref["x"]})["output_0"]
    assert y.dtype == np.float32
    assert np.abs(y - ref["y"]).max() < 0.03 * np.abs(ref["y"]).max()
    np.testing.assert_array_equal(y.argmax(1), ref["y"].argmax(1))
    assert edge_sdk.check_golden(bundle).passed


def test_missing_extra_names_it(monkeypatch, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)  # as if the package were not installed
    monkeypatch.delitem(sys.modules, "ai_edge_litert.interpreter", raising=False)
    monkeypatch.delitem(sys.modules, "runtimes.tflite_adapter", raising=False)
    with pytest.raises(BackendUnavailableError, match=r"pip install 'edge-sdk\[tflite\]'"):
        edge_sdk.convert(str(DATA / "mlp_float.tflite"), backend="tflite", output=tmp_path / "b")
