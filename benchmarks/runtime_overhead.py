"""SDK overhead: `Session.run` through edge-sdk vs the engine called directly on the same file.

    python benchmarks/runtime_overhead.py [--rounds 15] [--calls 300]

Calls are interleaved in rounds (SDK, direct, SDK, ...) so machine noise hits both alike; the median
per-call time of each is compared. ratio = direct / sdk: 1.0 means no overhead (goal >= 0.97).
Writes benchmarks/results/runtime_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from pathlib import Path

import numpy as np
from _timing import interleaved, overhead_row  # benchmarks/ is on sys.path when run as a script

import edge_sdk

RESULTS = Path(__file__).parent / "results"


def measure_onnx(bundle: edge_sdk.Bundle, variant_id: str, batch: int, rounds: int, calls: int) -> dict:
    import onnxruntime as ort

    from converters.zoo import digits_data
    from runtimes.onnxruntime_adapter import session_options

    x = {"input": digits_data().test_x[:batch]}
    variant = bundle.variant(variant_id)
    session = edge_sdk.load(bundle, variant_id, threads=1)
    so = session_options(threads=1)  # the options every SDK session takes (exact int8 on x86), nothing more
    direct = ort.InferenceSession(str(bundle.path_of(variant.files[0])), so, providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(x)["output"], direct.run(["output"], x)[0])  # same work on both sides
    sdk, raw = interleaved(lambda: session.run(x), lambda: direct.run(["output"], x), rounds, calls)
    return overhead_row("onnxruntime", variant_id, batch, rounds, calls, sdk, raw)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bundle = edge_sdk.convert("zoo:digits-cnn", quantize=["none", "int8-static"], output=Path(tmp) / "b")
        rows = [
            measure_onnx(bundle, vid, batch, args.rounds, args.calls)
            for vid in ("onnx-none", "onnx-int8-static")
            for batch in (1, 32)
        ]
    print(f"{'engine':12} {'variant':18} {'batch':>5} {'sdk µs':>9} {'direct µs':>10} {'ratio':>6}")
    for r in rows:
        print(
            f"{r['engine']:12} {r['variant']:18} {r['batch']:>5} {r['sdk_median_us']:>9.1f} "
            f"{r['direct_median_us']:>10.1f} {r['ratio_direct_over_sdk']:>6.3f}"
        )
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "runtime_overhead.json"
    out.write_text(json.dumps({"machine": platform.platform(), "results": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
