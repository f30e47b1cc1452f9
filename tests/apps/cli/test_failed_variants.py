"""Variants that failed at conversion: kept only with --allow-failed, recorded, and never taken for good ones by
`verify --run` or `install`; golden sets recorded in the batch a device replays them with."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

import edge_sdk

X = np.random.default_rng(0).standard_normal((64, 4)).astype(np.float32)


def _cli(*args):
    done = subprocess.run([sys.executable, "-m", "edge_sdk.cli", *args], capture_output=True, text=True, timeout=300)
    return done.returncode, " ".join((done.stdout + done.stderr).split())


@pytest.fixture(scope="module")
def overflowing(tmp_path_factory):
    """fp32 is exact; fp16 cannot hold outputs near 1e6 (its largest value is 65504): its gate fails anywhere."""
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    with torch.no_grad():
        model.weight.mul_(1e6)
    out = tmp_path_factory.mktemp("overflow") / "b"
    return edge_sdk.convert(model, {"input": X}, quantize="none,fp16", allow_failed=True, name="big", output=out)


def test_verify_run_and_install_say_failed_at_conversion(overflowing, tmp_path):
    assert [v.accuracy.passed for v in overflowing.variants] == [True, False]
    code, text = _cli("verify", str(overflowing.root), "--run")
    assert code == 1 and "onnx-fp16: FAILED at conversion" in text and "max_rel_error" in text
    assert _cli("verify", str(overflowing.root), "--run", "--allow-failed")[0] == 0
    code, text = _cli("install", str(overflowing.root), "--store", str(tmp_path / "s"))
    assert code == 1 and "FAILED at conversion" in text and "nothing was installed" in text
    code, text = _cli("install", str(overflowing.root), "--store", str(tmp_path / "s"), "--allow-failed")
    assert code == 0 and "installed" in text


def test_an_export_that_raises_is_recorded_and_the_others_kept(tmp_path):

    model = nn.Linear(4, 3)
    bundle = edge_sdk.convert(
        model, {"input": X}, backend="onnx,tflite", allow_failed=True, name="mixed", output=tmp_path / "b"
    )
    assert [v.id for v in bundle.variants] == ["onnx-none"]
    (failed,) = bundle.manifest.failed
    assert (failed.id, failed.stage) == ("tflite-none", "export") and "only wraps an existing .tflite" in failed.error
    code, text = _cli("verify", str(bundle.root), "--run")
    assert code == 0 and "FAILED at conversion tflite-none (export)" in text
    with pytest.raises(Exception, match="only wraps an existing .tflite"):
        edge_sdk.convert(model, {"input": X}, backend="onnx,tflite", name="mixed", output=tmp_path / "c")
    assert not (tmp_path / "c").exists()


def test_int8_dynamic_golden_outputs_are_what_the_device_replays(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 3))
    bundle = edge_sdk.convert(model, {"input": X}, quantize="int8-dynamic", output=tmp_path / "b")
    golden = bundle.golden()
    with edge_sdk.load(bundle) as session:
        replayed = session.run(golden.inputs)["output"]
    # Dynamic activation ranges depend on the batch: recorded in the golden batch, the replay is exact.
    assert np.array_equal(replayed, bundle.golden_outputs(bundle.variant())["output"])
