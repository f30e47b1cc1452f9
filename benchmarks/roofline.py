"""LLM decode against the machine's memory-bandwidth limit: llama.cpp directly, the SDK and the daemon.

    python benchmarks/roofline.py [--quantize f16,q8_0] [--rounds 3] [--tokens 64] [--threads N]

Decoding one token reads (nearly) every weight once, so tokens/s can be at most read bandwidth ÷ bytes of weights:
    share of the limit = bytes per token × tokens/s ÷ read bandwidth.
- Read bandwidth: every core at once. One process per CPU sums its own float64 array (numpy, one thread each);
  together the arrays are 16× the last-level cache, so they stream from memory. The processes start each pass
  together (a barrier); a pass's bandwidth is all bytes read ÷ the slowest process's time; best of 5 passes, as
  STREAM reports. The single-process figure is printed beside it: it understates the limit on more than one core.
- Bytes per token: the GGUF's tensor bytes (llama.cpp's own `llama_model_size`): all weights, the output head
  included (SmolLM2 ties it to the embeddings, so the whole table is read each token). The KV cache read per token
  is left out: at ≤ 300 positions it is < 1 % of the weights.
- Only variants larger than 4× the last-level cache count: smaller ones partly run from cache and can exceed the
  "limit" (they are reported, marked).
- Decode tokens/s: streamed tokens after the first ÷ time after the first; rounds alternate llama.cpp direct, the
  SDK's `Session.generate` and the daemon's SSE `/v1/completions` (a separate `edge-sdk serve` process), medians.
On a shared machine other processes take bandwidth too: the load average is recorded; quote the shares as ratios.
Writes benchmarks/results/roofline.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from _common import free_port, ratio, wait_ready, write_results  # benchmarks/ is on sys.path as a script

PROMPT = (
    "Write a short explanation of how a hash table works, including how collisions are handled, why the load "
    "factor matters, and what the average and worst-case lookup costs are.\n\nA hash table is"
)


def last_level_cache_bytes() -> int:
    """The largest cache one CPU sees (sysfs), e.g. the L3; 32 MiB when the kernel does not say."""
    best = 0
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            text = (index / "size").read_text().strip()
        except OSError:
            continue
        unit = {"K": 1024, "M": 1024**2, "G": 1024**3}.get(text[-1:], 1)
        best = max(best, int(text.rstrip("KMG")) * unit)
    return best or 32 * 1024**2


def _reader(nbytes: int, passes: int, barrier: Any, times: Any, slot: int) -> None:
    a = np.ones(nbytes // 8)  # written once: the pages are real before timing
    a.sum()
    for p in range(passes):
        barrier.wait()
        start = time.perf_counter()
        a.sum()
        times[slot * passes + p] = time.perf_counter() - start


def read_bandwidth(workers: int, total_bytes: int, passes: int = 5) -> float:
    """Bytes per second `workers` processes read together, each summing its own share of `total_bytes`."""
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(workers)
    times = ctx.Array("d", workers * passes)
    share = total_bytes // workers
    procs = [ctx.Process(target=_reader, args=(share, passes, barrier, times, i)) for i in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    per_pass = [max(times[w * passes + p] for w in range(workers)) for p in range(passes)]
    return share * workers / min(per_pass)


def _decode_rate(pieces: Iterable[object]) -> float:
    """Tokens/s after the first (the prompt is processed before it)."""
    first, count = None, 0
    for _ in pieces:
        count += 1
        if first is None:
            first = time.perf_counter()
    if first is None or count < 2:
        raise RuntimeError("the model produced fewer than 2 tokens for the benchmark prompt")
    return (count - 1) / (time.perf_counter() - first)


def _sse_pieces(url: str, body: dict) -> Iterator[str]:
    import httpx

    with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=600) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if line.startswith("data: {"):
                event = json.loads(line[6:])
                if "error" in event:
                    raise RuntimeError(f"the daemon's stream failed: {event['error']}")
                choices = event.get("choices") or [{}]  # the last event may carry only usage
                if choices[0].get("text"):
                    yield choices[0]["text"]


def tensor_bytes(llm: Any) -> int:
    import llama_cpp

    return int(llama_cpp.llama_model_size(llm.model))


def bench_variant(bundle: Any, variant_id: str, rounds: int, tokens: int, threads: int) -> dict:
    import llama_cpp

    from edge_sdk.api import load

    variant = bundle.variant(variant_id)
    path = bundle.path_of(variant.files[0])
    direct = llama_cpp.Llama(str(path), n_ctx=512, n_threads=threads, verbose=False)
    weights = tensor_bytes(direct)
    port = free_port()
    daemon = subprocess.Popen(
        [sys.executable, "-m", "edge_sdk.cli", "serve", str(bundle.root), "--port", str(port),
         "--threads", str(threads), "--context", "512", "--variant", variant_id, "--no-queue"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    options = {"max_tokens": tokens, "temperature": 0.0, "top_p": 1.0, "top_k": 1}
    rates: dict[str, list[float]] = {"direct": [], "sdk": [], "daemon": []}
    try:
        wait_ready(url, process=daemon)
        with load(bundle, variant_id, threads=threads, context=512) as session:
            for r in range(rounds):
                prompt = f"[{r}] {PROMPT}"  # a new prefix each round: no side reuses a cached prompt
                stream = direct.create_completion(prompt, stream=True, **options)
                rates["direct"].append(_decode_rate(c["choices"][0]["text"] for c in stream))
                rates["sdk"].append(_decode_rate(session.generate(prompt, **options)))
                body = {"model": bundle.name, "prompt": prompt, "stream": True, "max_tokens": tokens}
                body["temperature"] = 0.0  # greedy, as the other two
                rates["daemon"].append(_decode_rate(_sse_pieces(url, body)))
    finally:
        daemon.terminate()
        daemon.wait(timeout=60)
        direct.close()
    return {
        "variant": variant_id,
        "file_bytes": variant.size_bytes,
        "tensor_bytes": weights,
        **{f"{k}_decode_tps": statistics.median(v) for k, v in rates.items()},
        "samples": rates,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quantize", default="f16,q8_0")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--bundle", type=Path, help="Reuse this SmolLM2 GGUF bundle (written by an earlier run) instead of converting."
    )
    parser.add_argument("--keep", type=Path, help="Write the converted bundle here (to reuse with --bundle).")
    args = parser.parse_args()
    started = time.perf_counter()

    from edge_sdk.api import convert_llm, open_bundle

    llc = last_level_cache_bytes()
    cpus = os.cpu_count() or 1
    total = 16 * llc
    bw_all = read_bandwidth(cpus, total)
    bw_one = read_bandwidth(1, total // cpus)
    print(
        f"read bandwidth: {bw_all / 1e9:.1f} GB/s with {cpus} processes ({total / 2**20:.0f} MiB in all), "
        f"{bw_one / 1e9:.1f} GB/s with one; last-level cache {llc / 2**20:.0f} MiB"
    )
    rows = []
    with tempfile.TemporaryDirectory(prefix="roofline-") as tmp:
        if args.bundle is not None:
            bundle = open_bundle(args.bundle)
        else:
            out = args.keep or Path(tmp) / "b"
            bundle = convert_llm("zoo:smollm2", quantize=args.quantize, output=out, allow_failed=True, eval_tokens=64)
        for variant in bundle.manifest.variants:
            row = bench_variant(bundle, variant.id, args.rounds, args.tokens, args.threads)
            row["larger_than_4x_llc"] = row["tensor_bytes"] > 4 * llc
            for side in ("direct", "sdk", "daemon"):
                row[f"{side}_share"] = row["tensor_bytes"] * row[f"{side}_decode_tps"] / bw_all
            rows.append(row)
    header = f"{'variant':10} {'MiB':>6} {'>4xLLC':>6}  {'tok/s direct / SDK / daemon':>28}"
    print(f"{header}  {'share of the bandwidth limit':>28}")
    for r in rows:
        print(
            f"{r['variant']:10} {r['tensor_bytes'] / 2**20:6.0f} {'yes' if r['larger_than_4x_llc'] else 'no':>6}  "
            f"{r['direct_decode_tps']:8.1f} / {r['sdk_decode_tps']:6.1f} / {r['daemon_decode_tps']:6.1f}  "
            f"{100 * r['direct_share']:6.0f}% / {100 * r['sdk_share']:4.0f}% / {100 * r['daemon_share']:4.0f}%"
        )
    counted = [r for r in rows if r["larger_than_4x_llc"]]
    ratios = [
        ratio(f"decode {side} / llama.cpp direct, {r['variant']}", r[f"{side}_decode_tps"] / r["direct_decode_tps"],
              0.97 if side == "sdk" else 0.95)
        for r in counted for side in ("sdk", "daemon")
    ]  # fmt: skip
    payload = {
        "read_bandwidth_all_cores_gb_s": bw_all / 1e9,
        "read_bandwidth_one_core_gb_s": bw_one / 1e9,
        "bandwidth_method": f"{cpus} processes, a numpy float64 sum each over {total} bytes in all, "
        "a barrier before each pass, best of 5",
        "last_level_cache_bytes": llc,
        "threads": args.threads,
        "rounds": args.rounds,
        "decode_tokens": args.tokens,
        "variants": rows,
        "ratios": ratios,
    }
    write_results("roofline", payload, started=started)


if __name__ == "__main__":
    main()
