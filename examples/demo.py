"""The main job on the embedded default, step by step, through the `edge-sdk` CLI (run by `make demo`).

1. the digits CNN (trained in seconds on scikit-learn's offline digits data, then cached);
2. converted for a Raspberry Pi 5 into one ONNX bundle with fp32 and int8 variants, each measured;
3. the bundle verified (digests, then the golden set re-run here), inspected, and run on real digits.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "demo-out"
CLI = [sys.executable, "-m", "edge_sdk.cli"]


def step(title: str, *args: str) -> None:
    print(f"\n\033[1m== {title}\033[0m\n$ edge-sdk {shlex.join(args)}", flush=True)
    subprocess.run([*CLI, *args], check=True, cwd=ROOT, env={**os.environ, "COLUMNS": "140"})


def main() -> None:
    from converters.zoo import digits_data

    OUT.mkdir(exist_ok=True)
    data = digits_data()
    sample = OUT / "digits-sample.npz"
    np.savez(sample, input=data.test_x[:12])
    print("true labels of the 12 sample digits:", data.test_y[:12].tolist())

    step("The target: a Raspberry Pi 5", "profiles", "show", "rpi5")
    bundle = str(OUT / "digits-cnn")
    step(
        "Convert the digits CNN for rpi5: fp32, static int8 and dynamic int8, each run and measured",
        "convert",
        "zoo:digits-cnn",
        "--backend",
        "onnx",
        "--quantize",
        "none,int8-static,int8-dynamic",
        "--profile",
        "rpi5",
        "--profile",
        "rpi4",
        "--name",
        "digits-cnn",
        "--output",
        bundle,
        "--overwrite",
    )
    step("Verify it as a device would: digests first, then the golden set on this machine", "verify", bundle, "--run")
    step(
        "Run the int8 variant on 12 held-out digits",
        "run",
        bundle,
        "--input",
        str(sample),
        "--variant",
        "onnx-int8-static",
    )
    step("Pack it into one file to copy onto the board", "pack", bundle, "--output", str(OUT / "digits-cnn"))


if __name__ == "__main__":
    main()
