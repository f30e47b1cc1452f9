"""Stand-in for "someone else's ONNX model": the digits CNN exported to a plain .onnx, with real samples.

    python examples/export_onnx_model.py [DIR]

writes DIR/model.onnx (opset 17, dynamic batch), DIR/calib.npz (512 training images, for static int8) and
DIR/eval.npz (the held-out images and their `labels`, for the accuracy gate). Any .onnx with an .npz of its
inputs works the same way:
    edge-sdk convert model.onnx -q int8-dynamic,int8-static --calibration calib.npz --eval eval.npz -p rpi4 -o out/q
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from converters.zoo import digits_cnn, digits_data


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    out.mkdir(parents=True, exist_ok=True)
    data = digits_data()
    model = digits_cnn().eval()
    torch.onnx.export(
        model,
        (torch.from_numpy(data.train_x[:1]),),
        str(out / "model.onnx"),
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    np.savez(out / "calib.npz", input=data.train_x[:512])
    np.savez(out / "eval.npz", input=data.test_x, labels=data.test_y)
    print(f"wrote {out / 'model.onnx'}, {out / 'calib.npz'}, {out / 'eval.npz'}")


if __name__ == "__main__":
    main()
