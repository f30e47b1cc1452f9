"""Shared, session-scoped artifacts: the digits data and one converted ONNX bundle, built once per run."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

# The CLI's rich consoles read the width once, at import: make it wide enough for the tables under test.
os.environ.setdefault("COLUMNS", "200")


@pytest.fixture(scope="session")
def digits():
    from converters.zoo import digits_data

    return digits_data()


@pytest.fixture(scope="session")
def digits_model():
    from converters.zoo import digits_cnn

    return digits_cnn()


ONNX_SCHEMES = ["none", "int8-dynamic", "int8-static", "fp16"]


@pytest.fixture(scope="session")
def onnx_bundle(tmp_path_factory, digits, digits_model):
    """The digits CNN through ONNX with every quantization, evaluated on the held-out split."""
    import edge_sdk

    out = tmp_path_factory.mktemp("onnx") / "digits-cnn"
    return edge_sdk.convert(
        digits_model,
        {"input": digits.train_x[:64]},
        backend="onnx",
        quantize=ONNX_SCHEMES,
        profile=["rpi5", "rpi4"],
        output=out,
        name="digits-cnn",
        calibration={"input": digits.train_x[:512]},
        eval_data=({"input": digits.test_x}, digits.test_y),
    )


def copy_bundle(bundle_root: Path, dest: Path) -> Path:
    """A private copy of a bundle directory that a test may damage."""
    import shutil

    shutil.copytree(bundle_root, dest)
    return dest


@pytest.fixture
def bundle_copy(onnx_bundle, tmp_path) -> Path:
    return copy_bundle(onnx_bundle.root, tmp_path / "copy")


@pytest.fixture
def sample(digits) -> dict[str, np.ndarray]:
    return {"input": digits.test_x[:8]}
