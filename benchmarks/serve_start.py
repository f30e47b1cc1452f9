"""Start -> first answer: `edge-sdk serve` vs `python -m llama_cpp.server` on the same GGUF file.

    python benchmarks/serve_start.py [--rounds 5] [--once edge|llama --gguf FILE --bundle DIR]

Each run starts the server as a fresh process, waits until it says it is ready (edge-sdk: `/health/ready` 200,
which with --preload, the default, means the model is loaded; llama.cpp's server: `/v1/models` 200, as it loads
the model before listening), then sends one `/v1/completions` request (8 tokens, greedy, naming the bundle's model
as a client that deployed it would; llama.cpp's server serves its one model whatever the name) and stops it.
The time from starting the process to the answer is what a device's supervisor sees after a reboot. Runs
alternate (edge, llama, llama, edge, ...) so machine noise hits both; medians; ratio = edge / llama (goal <= 1.0).
`--no-preload` shows the old behaviour (ready before the model is loaded: the first request pays the load).
`--once` runs one side once and exits (for timing the whole command from outside).
The project's bytecode is written first (`_common.compile_bytecode`): llama.cpp's server runs from a wheel pip
compiled at install, and so does an installed edge-sdk; this checkout's editable install would otherwise compile
our modules from source at every start.
Writes benchmarks/results/serve_start.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# benchmarks/ is on sys.path as a script
from _common import compile_bytecode, free_port, ratio, wait_ready, write_results

GOAL = 1.0
BODY = {"prompt": "The capital of France is", "max_tokens": 8, "temperature": 0.0}


def start_to_answer(side: str, gguf: Path, bundle: Path, threads: int, extra: list[str], model: str) -> dict:
    import httpx

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    if side == "edge":
        cmd = [sys.executable, "-m", "edge_sdk.cli", "serve", str(bundle), "--port", str(port),
               "--threads", str(threads), "--context", "512", "--no-queue", *extra]  # fmt: skip
        ready_path = "/health/ready"
    else:
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--port", str(port),
               "--n_threads", str(threads), "--n_ctx", "512", "--verbose", "False"]  # fmt: skip
        ready_path = "/v1/models"
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(url, ready_path, process=proc, interval_s=0.01)
        ready = time.perf_counter() - start
        r = httpx.post(f"{url}/v1/completions", json={**BODY, "model": model}, timeout=120)
        r.raise_for_status()
        answered = time.perf_counter() - start
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    return {"ready_s": ready, "answer_s": answered}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-preload", action="store_true", help="Serve with --no-preload (the old start).")
    parser.add_argument("--once", choices=["edge", "llama"], help="One run of one side, then exit.")
    parser.add_argument("--gguf", type=Path, help="With --once: the GGUF file.")
    parser.add_argument("--bundle", type=Path, help="With --once: the bundle holding that file.")
    args = parser.parse_args()
    extra = ["--no-preload"] if args.no_preload else []
    compile_bytecode()
    if args.once:
        if args.gguf is None or args.bundle is None:
            parser.error("--once needs --gguf and --bundle")
        name = json.loads((args.bundle / "manifest.json").read_text())["name"]
        print(start_to_answer(args.once, args.gguf, args.bundle, args.threads, extra, name))
        return
    started = time.perf_counter()
    from converters.gguf.zoo import smollm2_as_shipped

    with tempfile.TemporaryDirectory(prefix="serve-start-") as tmp:
        bundle = smollm2_as_shipped(Path(tmp) / "smollm2")
        gguf = bundle.path_of(bundle.variant().files[0])
        name = bundle.manifest.name
        start_to_answer("edge", gguf, bundle.root, args.threads, extra, name)  # warm the page cache for both
        start_to_answer("llama", gguf, bundle.root, args.threads, extra, name)
        runs: dict[str, list[dict]] = {"edge": [], "llama": []}
        for r in range(args.rounds):
            for side in ("edge", "llama") if r % 2 == 0 else ("llama", "edge"):
                runs[side].append(start_to_answer(side, gguf, bundle.root, args.threads, extra, name))
        size = gguf.stat().st_size
    med = {side: {k: statistics.median(x[k] for x in v) for k in ("ready_s", "answer_s")} for side, v in runs.items()}
    value = med["edge"]["answer_s"] / med["llama"]["answer_s"]
    print(f"model: SmolLM2-135M Q4_1 GGUF, {size / 2**20:.0f} MiB; {args.rounds} runs each, medians")
    print(f"{'server':28} {'ready s':>8} {'first answer s':>15}")
    print(f"{'edge-sdk serve' + (' --no-preload' if extra else ''):28} {med['edge']['ready_s']:>8.2f} "
          f"{med['edge']['answer_s']:>15.2f}")  # fmt: skip
    print(f"{'python -m llama_cpp.server':28} {med['llama']['ready_s']:>8.2f} {med['llama']['answer_s']:>15.2f}")
    print(f"ratio edge / llama.cpp server: {value:.2f} (goal <= {GOAL})")
    name = "serve start -> first answer / llama_cpp.server" + (" (--no-preload)" if extra else "")
    write_results(
        "serve_start" + ("_no_preload" if extra else ""),
        {"model_bytes": size, "medians": med, "runs": runs,
         "ratios": [ratio(name, value, GOAL, higher_is_better=False)]},
        started=started,
    )  # fmt: skip


if __name__ == "__main__":
    main()
