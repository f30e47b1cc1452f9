"""SDK overhead: `Session.run` through edge-sdk vs each engine called directly on the same file, digits CNN.

    python benchmarks/runtime_overhead.py [--engines onnxruntime,executorch,litert] [--rounds 15] [--calls 300]

Engines: ONNX Runtime (`InferenceSession.run`), ExecuTorch (`Method.execute` on `torch.from_numpy`, `.numpy()`
out), LiteRT (`set_tensor`, `invoke`, `get_tensor`), each with one thread, fp32 and (ORT, ExecuTorch) static int8.
Calls are interleaved in rounds (SDK, direct, direct, SDK, ...) so machine noise hits both alike; the median
per-call time of each is compared. ratio = direct / sdk: 1.0 means no overhead (goal >= 0.97, batch 1 and 32).
`Session.run(check=False)` (the trusted path: dtypes only) is measured too, for information.
Writes benchmarks/results/runtime_overhead.json.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from _common import (  # benchmarks/ is on sys.path as a script
    interleaved,
    interleaved_rounds,
    overhead_row,
    ratio,
    write_results,
)

import edge_sdk

GOAL = 0.97
BATCHES = (1, 32)


def _file(bundle: edge_sdk.Bundle, variant_id: str) -> Path:
    return bundle.path_of(bundle.variant(variant_id).files[0])


def onnx_direct(bundle: edge_sdk.Bundle, variant_id: str, x: np.ndarray) -> Callable[[], object]:
    import onnxruntime as ort

    from runtimes.onnxruntime_adapter import session_options

    so = session_options(threads=1)  # the options every SDK session takes (exact int8 on x86), nothing more
    direct = ort.InferenceSession(str(_file(bundle, variant_id)), so, providers=["CPUExecutionProvider"])
    feed = {"input": x}
    return lambda: direct.run(["output"], feed)[0]


def executorch_direct(bundle: edge_sdk.Bundle, variant_id: str, x: np.ndarray) -> Callable[[], object]:
    import torch
    from executorch.runtime import Runtime

    method = Runtime.get().load_program(_file(bundle, variant_id)).load_method("forward")
    assert method is not None
    return lambda: method.execute([torch.from_numpy(x)])[0].numpy()


def litert_direct(bundle: edge_sdk.Bundle, variant_id: str, x: np.ndarray) -> Callable[[], object]:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(_file(bundle, variant_id)), num_threads=1)
    i, o = interp.get_input_details()[0]["index"], interp.get_output_details()[0]["index"]
    interp.resize_tensor_input(i, list(x.shape), strict=True)
    interp.allocate_tensors()

    def call() -> object:
        interp.set_tensor(i, x)
        interp.invoke()
        return interp.get_tensor(o)  # a copy: the interpreter reuses its buffer

    return call


DIRECT = {"onnxruntime": onnx_direct, "executorch": executorch_direct, "litert": litert_direct}


def measure(engine: str, bundle: edge_sdk.Bundle, variant_id: str, batch: int, rounds: int, calls: int) -> dict:
    from converters.zoo import digits_data

    x = np.ascontiguousarray(digits_data().test_x[:batch])
    inputs = {"input": x}
    session = edge_sdk.load(bundle, variant_id, threads=1)
    direct = DIRECT[engine](bundle, variant_id, x)
    np.testing.assert_allclose(session.run(inputs)["output"], direct(), rtol=1e-6)  # same work on both sides
    # partial, not a lambda: the harness calls each side through one call of its own (`direct` is a function)
    sdk_rounds, raw_rounds = interleaved_rounds(functools.partial(session.run, inputs), direct, rounds, calls)
    trusted, raw2 = interleaved(functools.partial(session.run, inputs, check=False), direct, rounds, calls)
    session.close()
    sdk, raw = statistics.median(sdk_rounds), statistics.median(raw_rounds)
    row = overhead_row(engine, variant_id, batch, rounds, calls, sdk, raw)
    # On a loaded machine a round of a 10 µs model is often cut by the scheduler: the fastest rounds show the
    # cost of the code itself, the medians what a user of this machine sees.
    row["ratio_fastest_rounds"] = min(raw_rounds) / min(sdk_rounds)
    row["trusted_median_us"] = trusted * 1e6
    row["ratio_direct_over_trusted"] = raw2 / trusted
    return row


def bundles(tmp: Path, engines: list[str]) -> list[tuple[str, edge_sdk.Bundle, str]]:
    """(engine, bundle, variant id) for every variant measured."""
    out = []
    backends = [b for b, e in (("onnx", "onnxruntime"), ("executorch", "executorch")) if e in engines]
    if backends:
        bundle = edge_sdk.convert(
            "zoo:digits-cnn", backend=",".join(backends), quantize=["none", "int8-static"], output=tmp / "b"
        )
        for v in bundle.manifest.variants:
            out.append(("onnxruntime" if v.backend.value == "onnx" else "executorch", bundle, v.id))
    if "litert" in engines:
        from _digits_tflite import write_digits_tflite

        from converters.zoo import digits_data

        path = write_digits_tflite(tmp / "digits.tflite")
        lite = edge_sdk.convert(
            str(path), {"input": digits_data().test_x[:64]}, backend="tflite", output=tmp / "t", name="digits-tflite"
        )
        out += [("litert", lite, v.id) for v in lite.manifest.variants]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", default="onnxruntime,executorch,litert")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    started = time.perf_counter()
    engines = [e.strip() for e in args.engines.split(",")]
    unknown = set(engines) - set(DIRECT)
    if unknown:
        parser.error(f"unknown engine(s) {sorted(unknown)}; choose from {sorted(DIRECT)}")
    with tempfile.TemporaryDirectory() as tmp:
        rows = [
            measure(engine, bundle, vid, batch, args.rounds, args.calls)
            for engine, bundle, vid in bundles(Path(tmp), engines)
            for batch in BATCHES
        ]
    print(
        f"{'engine':12} {'variant':24} {'batch':>5} {'sdk µs':>9} {'direct µs':>10} {'ratio':>6} {'check=False':>12} "
        f"{'fastest':>8}"
    )
    for r in rows:
        print(
            f"{r['engine']:12} {r['variant']:24} {r['batch']:>5} {r['sdk_median_us']:>9.1f} "
            f"{r['direct_median_us']:>10.1f} {r['ratio_direct_over_sdk']:>6.3f} "
            f"{r['ratio_direct_over_trusted']:>12.3f} {r['ratio_fastest_rounds']:>8.3f}"
        )
    ratios = [
        ratio(f"Session.run speed / {r['engine']}, {r['variant']} b{r['batch']}", r["ratio_direct_over_sdk"], GOAL)
        for r in rows
    ]
    write_results("runtime_overhead", {"goal": GOAL, "results": rows, "ratios": ratios}, started=started)


if __name__ == "__main__":
    main()
