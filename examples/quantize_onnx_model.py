"""Quantize an ONNX model someone else exported, and check what int8 costs in accuracy.

    python examples/quantize_onnx_model.py MODEL.onnx [CALIBRATION.npz] [OUT_DIR]

Without a calibration .npz, seeded random inputs shaped like the model's inputs stand in (fine for a
smoke test, poor for real accuracy: give real samples). The CLI equivalent:
    edge-sdk convert MODEL.onnx -q int8-dynamic,int8-static --calibration calib.npz -p rpi4 -o out/
"""

from __future__ import annotations

import sys

import numpy as np

import edge_sdk


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    model = sys.argv[1]
    calibration = dict(np.load(sys.argv[2])) if len(sys.argv) > 2 else None
    out = sys.argv[3] if len(sys.argv) > 3 else "out/quantized"
    bundle = edge_sdk.convert(
        model,
        backend="onnx",
        quantize=["int8-dynamic", "int8-static"],
        profile="rpi4",
        calibration=calibration,
        output=out,
        overwrite=True,
        allow_failed=True,
    )
    for v in bundle.variants:
        cos = v.accuracy.metric("cosine_similarity")
        print(f"{v.id}: {v.size_bytes} bytes, cosine vs original {cos.value:.5f}, passed={v.accuracy.passed}")


if __name__ == "__main__":
    main()
