"""An .onnx made elsewhere, given only calibration data (README "Someone else's ONNX model"): it is judged on
those real samples, not on the seeded noise that stands in for its missing example inputs."""

from __future__ import annotations

import edge_sdk


def test_calibration_data_is_the_evaluation_set_of_a_model_without_examples(onnx_bundle, digits, tmp_path):
    model = onnx_bundle.root / "variants" / "onnx-none" / "model.onnx"  # a plain fp32 .onnx of the digits CNN
    calibration = {"input": digits.train_x[:256]}
    bundle = edge_sdk.convert(
        str(model), quantize="int8-static", calibration=calibration, output=tmp_path / "b", allow_failed=True
    )
    report = bundle.variants[0].accuracy
    assert report is not None and report.samples == 256, "not evaluated on the calibration samples"
    assert report.passed, report
