"""ExecuTorch via edge-sdk: SDK overhead vs `executorch.runtime` called directly, and ExecuTorch vs ONNX Runtime.

    python benchmarks/runtime_overhead_executorch.py [--rounds 15] [--calls 300]

1. Overhead: `Session.run` vs `Runtime.get().load_program(pte).load_method("forward").execute([tensor])` on the
   same .pte. Calls are interleaved in rounds (SDK, direct, SDK, ...) so machine noise hits both alike; the median
   per-call time of each is compared. ratio = direct / sdk: 1.0 means no overhead (goal >= 0.97). The direct side
   does what any caller holding numpy data must: `torch.from_numpy` in, `.numpy()` out. The SDK adds the input
   check against the TensorSpecs. The machine's load is recorded: on a busy 2-core box the medians are noisy.
2. Engines: the digits CNN, same recipe (fp32, static int8), ExecuTorch (XNNPACK) vs ONNX Runtime (CPU EP), both
   through `Session.run` with one thread, interleaved the same way; plus the artifact sizes.

Writes benchmarks/results/executorch_overhead.json.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from _common import interleaved, overhead_row, write_results  # benchmarks/ is on sys.path as a script

import edge_sdk

SCHEMES = ("none", "int8-static")
BATCHES = (1, 32)


def _file(bundle: edge_sdk.Bundle, variant_id: str, suffix: str) -> Path:
    variant = bundle.variant(variant_id)
    return bundle.path_of(next(f for f in variant.files if f.path.endswith(suffix)))


def measure_overhead(bundle: edge_sdk.Bundle, scheme: str, batch: int, rounds: int, calls: int) -> dict:
    import torch
    from executorch.runtime import Runtime

    from converters.zoo import digits_data

    variant_id = f"executorch-{scheme}"
    x = {"input": digits_data().test_x[:batch]}
    session = edge_sdk.load(bundle, variant_id, threads=1)
    method = Runtime.get().load_program(_file(bundle, variant_id, ".pte")).load_method("forward")
    assert method is not None

    def direct() -> object:
        return method.execute([torch.from_numpy(x["input"])])[0].numpy()

    np.testing.assert_allclose(session.run(x)["output"], direct())  # same work on both sides
    sdk, raw = interleaved(lambda: session.run(x), direct, rounds, calls)
    session.close()
    return overhead_row("executorch", variant_id, batch, rounds, calls, sdk, raw)


def compare_engines(bundle: edge_sdk.Bundle, scheme: str, batch: int, rounds: int, calls: int) -> dict:
    from converters.zoo import digits_data

    x = {"input": digits_data().test_x[:batch]}
    et = edge_sdk.load(bundle, f"executorch-{scheme}", threads=1)
    ort = edge_sdk.load(bundle, f"onnx-{scheme}", threads=1)
    et_s, ort_s = interleaved(lambda: et.run(x), lambda: ort.run(x), rounds, calls)
    agree = float(np.mean(et.run(x)["output"].argmax(1) == ort.run(x)["output"].argmax(1)))
    et.close()
    ort.close()
    return {
        "recipe": scheme,
        "batch": batch,
        "executorch_median_us": et_s * 1e6,
        "onnxruntime_median_us": ort_s * 1e6,
        "speed_ratio_ort_over_et": ort_s / et_s,
        "executorch_bytes": _file(bundle, f"executorch-{scheme}", ".pte").stat().st_size,
        "onnxruntime_bytes": _file(bundle, f"onnx-{scheme}", ".onnx").stat().st_size,
        "top1_agreement": agree,
        "executorch_accuracy": bundle.variant(f"executorch-{scheme}").accuracy.metric("accuracy").value,
        "onnxruntime_accuracy": bundle.variant(f"onnx-{scheme}").accuracy.metric("accuracy").value,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bundle = edge_sdk.convert(
            "zoo:digits-cnn", backend="onnx,executorch", quantize=list(SCHEMES), output=Path(tmp) / "b"
        )
        overhead = [measure_overhead(bundle, s, b, args.rounds, args.calls) for s in SCHEMES for b in BATCHES]
        engines = [compare_engines(bundle, s, b, args.rounds, args.calls) for s in SCHEMES for b in BATCHES]

    print("SDK Session.run vs executorch.runtime directly (ratio = direct / sdk; goal >= 0.97)")
    print(f"{'variant':24} {'batch':>5} {'sdk µs':>9} {'direct µs':>10} {'ratio':>6}")
    for r in overhead:
        print(
            f"{r['variant']:24} {r['batch']:>5} {r['sdk_median_us']:>9.1f} "
            f"{r['direct_median_us']:>10.1f} {r['ratio_direct_over_sdk']:>6.3f}"
        )
    print()
    print("ExecuTorch (XNNPACK) vs ONNX Runtime (CPU EP), both via Session.run, 1 thread")
    print(
        f"{'recipe':12} {'batch':>5} {'ET µs':>9} {'ORT µs':>9} {'ORT/ET':>7} {'ET bytes':>9} {'ORT bytes':>10} "
        f"{'acc ET/ORT':>12}"
    )
    for r in engines:
        print(
            f"{r['recipe']:12} {r['batch']:>5} {r['executorch_median_us']:>9.1f} {r['onnxruntime_median_us']:>9.1f} "
            f"{r['speed_ratio_ort_over_et']:>7.2f} {r['executorch_bytes']:>9} {r['onnxruntime_bytes']:>10} "
            f"{r['executorch_accuracy']:>5.3f}/{r['onnxruntime_accuracy']:.3f}"
        )
    write_results("executorch_overhead", {"overhead": overhead, "engines": engines})


if __name__ == "__main__":
    main()
