"""Is `fit` right? Predicted vs measured peak memory and speed for every (model, backend, recipe) the tests cover.

    python benchmarks/fit_accuracy.py [--quick] [--contexts 512,4096]

Each case is measured in a fresh Python process (VmHWM from /proc/self/status after loading the variant and
running it: a batch-1 tensor call for ~0.5 s, or a ~200-token prompt and 64 decoded tokens), because a
process's peak never comes down. The prediction comes from device_profiles.estimate for the detected host.
Speed: LLM decode tokens/s is predicted from the host's measured bandwidth and per-type compute constants;
tensor-model latency is not predicted from first principles: `fit` measures it on the host for ~0.3 s and
scales it to the device, so on the host the "prediction" is that quick measurement made in another process.

Cases: the digits CNN (ONNX: fp32, fp16, int8 dynamic/static, pruned 50 %; ExecuTorch: fp32, int8 static and
dynamic), a 97 MiB MLP built in code (ONNX and ExecuTorch, fp32 and int8 dynamic), SmolLM2-135M (Q4_1 as
shipped; q8_0, q4_0, q4_k_m converted) at each context. Goal: memory within ±15 %, speed within ±25 %.
Writes benchmarks/results/fit_accuracy.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import load_average, write_results  # benchmarks/ is on sys.path as a script

PROMPT = " ".join(["The quick brown fox jumps over the lazy dog near the river bank."] * 16) + " Then"
MEMORY_GOAL, SPEED_GOAL = 15.0, 25.0
MiB = 1024 * 1024


def _vm_hwm() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def child(bundle: str, variant_id: str, context: int | None) -> None:
    """Runs in a fresh process: load, run, print peak memory and speed as JSON."""
    import numpy as np

    import edge_sdk
    from runtimes import SessionOptions, get_runtime
    from runtimes.measure import one_sample

    opened = edge_sdk.open_bundle(bundle)
    variant = opened.variant(variant_id)
    session = get_runtime(variant.backend).load(variant, opened.root, SessionOptions(context=context))
    out: dict[str, float] = {}
    if context:
        pieces = list(session.generate(PROMPT, max_tokens=64, temperature=0.0))
        stats = session.last_stats  # type: ignore[attr-defined]
        out["tokens_per_second"] = stats.tokens_per_second
        out["kv_tokens"] = stats.prompt_tokens + len(pieces) / 2
    else:
        golden = opened.golden()
        sample = one_sample(variant, golden.inputs if golden else None)
        session.run(sample)
        times, deadline = [], time.perf_counter() + 0.5
        while time.perf_counter() < deadline or len(times) < 20:
            start = time.perf_counter()
            session.run(sample)
            times.append(time.perf_counter() - start)
        out["latency_ms"] = float(np.median(times)) * 1e3
    out["peak_bytes"] = _vm_hwm()
    print(json.dumps(out))


def measure(bundle: Path, variant_id: str, context: int | None) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--child", str(bundle), variant_id, str(context or 0)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"measuring {variant_id} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def build_cases(work: Path, quick: bool) -> list[tuple[Path, str]]:
    """(bundle, variant id) for each tensor case; the bundles are converted here."""
    import numpy as np
    import torch
    from torch import nn

    import edge_sdk
    from converters.zoo import digits_cnn, digits_data

    data = digits_data()
    kw = {"calibration": {"input": data.train_x[:256]}, "eval_data": ({"input": data.test_x}, data.test_y)}
    bundles = [
        edge_sdk.convert(digits_cnn(), backend="onnx", quantize="none,fp16,int8-dynamic,int8-static",
                         output=work / "digits-onnx", **kw),
    ]  # fmt: skip
    if not quick:
        bundles += [
            edge_sdk.convert(digits_cnn(), backend="executorch", quantize="none,int8-static,int8-dynamic",
                             output=work / "digits-et", **kw),
            edge_sdk.convert(digits_cnn(), backend="onnx", quantize="none", prune=0.5, output=work / "digits-p50",
                             max_accuracy_drop=0.02, **kw),
        ]  # fmt: skip
        torch.manual_seed(0)
        mlp = nn.Sequential(nn.Flatten(), nn.Linear(64, 2048), nn.ReLU(), nn.Linear(2048, 4096), nn.ReLU(),
                            nn.Linear(4096, 4096), nn.ReLU(), nn.Linear(4096, 10))  # fmt: skip
        x = np.random.default_rng(0).standard_normal((64, 1, 8, 8)).astype(np.float32)
        bundles.append(
            edge_sdk.convert(mlp, {"input": x}, backend="onnx,executorch", quantize="none,int8-dynamic",
                             allow_failed=True, output=work / "mlp", name="mlp-97mib")
        )  # fmt: skip
    return [(b.root, v.id) for b in bundles for v in b.variants]


def llm_cases(work: Path, quick: bool) -> list[tuple[Path, str]]:
    from converters.gguf.zoo import smollm2_as_shipped
    from edge_sdk.api import convert_llm

    shipped = smollm2_as_shipped(work / "smollm2")
    cases = [(shipped.root, v.id) for v in shipped.variants]
    if not quick:
        converted = convert_llm("zoo:smollm2", quantize="q8_0,q4_0,q4_k_m", output=work / "smollm2-q")
        cases += [(converted.root, v.id) for v in converted.variants]
    return cases


def predict(bundle: Path, variant_id: str, context: int | None, kv_tokens: float, host) -> dict[str, float]:
    import edge_sdk
    from device_profiles.estimate import ModelFacts, estimate_decode, estimate_memory
    from runtimes.measure import host_latency

    opened = edge_sdk.open_bundle(bundle)
    v = opened.variant(variant_id)
    facts = ModelFacts.of_variant(v, opened.root)
    out = {"peak_bytes": float(estimate_memory(facts, context, host).peak_bytes)}
    if context:
        out["tokens_per_second"] = estimate_decode(facts, host, context, int(kv_tokens)).tokens_per_second or 0.0
    else:
        golden = opened.golden()
        latency = host_latency(v, opened.root, golden.inputs if golden else None)
        out["latency_ms"] = (latency or 0.0) * 1e3
    return out


def error(predicted: float, measured: float) -> float:
    return (predicted - measured) / measured * 100 if measured else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="digits on ONNX and SmolLM2 as shipped only")
    parser.add_argument("--contexts", default="512,4096", help="LLM context lengths to measure at")
    args = parser.parse_args()
    from device_profiles import load_profile

    host = load_profile("host")
    contexts = [int(c) for c in args.contexts.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="fit-accuracy-") as tmp:
        work = Path(tmp)
        cases = [(b, v, None) for b, v in build_cases(work, args.quick)]
        cases += [(b, v, c) for b, v in llm_cases(work, args.quick) for c in contexts]
        for bundle, variant_id, context in cases:
            measured = measure(bundle, variant_id, context)
            predicted = predict(bundle, variant_id, context, measured.get("kv_tokens", 0), host)
            speed_key = "tokens_per_second" if context else "latency_ms"
            row = {
                "case": f"{bundle.name}/{variant_id}" + (f"@ctx{context}" if context else ""),
                "predicted_peak_mib": predicted["peak_bytes"] / MiB,
                "measured_peak_mib": measured["peak_bytes"] / MiB,
                "memory_error_pct": error(predicted["peak_bytes"], measured["peak_bytes"]),
                "speed_metric": speed_key,
                "predicted_speed": predicted[speed_key],
                "measured_speed": measured[speed_key],
                "speed_error_pct": error(predicted[speed_key], measured[speed_key]),
            }
            rows.append(row)
            print(
                f"{row['case']:<42} memory {row['predicted_peak_mib']:7.1f} vs {row['measured_peak_mib']:7.1f} MiB "
                f"({row['memory_error_pct']:+6.1f} %)   {speed_key} {row['predicted_speed']:8.3f} vs "
                f"{row['measured_speed']:8.3f} ({row['speed_error_pct']:+6.1f} %)",
                flush=True,
            )
    within_mem = sum(abs(r["memory_error_pct"]) <= MEMORY_GOAL for r in rows)
    within_speed = sum(abs(r["speed_error_pct"]) <= SPEED_GOAL for r in rows)
    summary = {
        "cases": len(rows),
        "memory_within_15pct": within_mem,
        "speed_within_25pct": within_speed,
        "max_abs_memory_error_pct": max(abs(r["memory_error_pct"]) for r in rows),
        "max_abs_speed_error_pct": max(abs(r["speed_error_pct"]) for r in rows),
    }
    print(f"load average {load_average():.1f} on {host.cpu.cores} cores: speed errors grow with it")
    print(
        f"memory within ±{MEMORY_GOAL:g} %: {within_mem}/{len(rows)}; speed within ±{SPEED_GOAL:g} %: "
        f"{within_speed}/{len(rows)}"
    )
    host_facts = {"cpu": host.cpu.model, "cores": host.cpu.cores, "bandwidth_gbps": host.memory.bandwidth_gbps}
    write_results("fit_accuracy", {"host": host_facts, "summary": summary, "rows": rows})


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]) or None)
    else:
        main()
