"""Convert a torch model of your own for a Raspberry Pi 5: ONNX fp32 and int8, verified and bundled.

    python examples/convert_torch_model.py [OUT_DIR]

The CLI does the same:
    edge-sdk convert examples/convert_torch_model.py:build --input-shape 1x3x32x32 \
        -q none,int8-static -p rpi5 --max-accuracy-drop 0.05 -o out/
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from torch import nn

import edge_sdk


def build() -> nn.Module:
    """A small image model (random weights: substitute your trained one)."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(256, 10)
    ).eval()


def main() -> None:
    out = sys.argv[1] if len(sys.argv) > 1 else "out/tiny-convnet"
    examples = {"input": np.random.default_rng(0).standard_normal((64, 3, 32, 32)).astype(np.float32)}
    bundle = edge_sdk.convert(
        build(),
        examples,
        backend="onnx",
        quantize=["none", "int8-static"],
        profile="rpi5",
        output=out,
        name="tiny-convnet",
        overwrite=True,
        # Random weights give near-tied class scores, so int8 flips a few top-1 decisions: allow 5 %.
        max_accuracy_drop=0.05,
    )
    for v in bundle.variants:
        fit = v.fit["rpi5"]
        print(
            f"{v.id}: {v.size_bytes} bytes, accuracy gate {'passed' if v.accuracy.passed else 'FAILED'}, "
            f"fits rpi5: {fit.fits}"
        )
    with edge_sdk.load(bundle, "onnx-int8-static") as session:
        print("output shape:", session.run({"input": examples["input"][:2]})["output"].shape)


if __name__ == "__main__":
    main()
