"""SmolLM2 per GGUF type: size, ΔPPL, KLD, prompt and decode tokens/s via Session.generate vs llama.cpp directly.

    python benchmarks/llm_decode.py [--quantize f16,q8_0,q4_0,q4_k_m] [--rounds 3] [--tokens 64]

The packaged Q4_1 SmolLM2 is dequantized and converted to each type by `convert_llm` (which measures KLD and
perplexity against the f32 reference on stdlib docstrings). Each round runs the same prompt through the SDK's
streaming `generate` and through `llama_cpp.Llama.create_completion(stream=True)` on the same file, alternating
so machine noise hits both; the median of each is compared: ratio = sdk tokens/s ÷ direct tokens/s (goal ≥ 0.97).
Decode speed is also given as a share of this machine's memory-bandwidth limit: bytes of weights read per token
× tokens/s ÷ read bandwidth measured with every core (benchmarks/roofline.py, which says how; for models smaller
than 4× the last-level cache the share is not meaningful: they partly run from cache).
Writes benchmarks/results/llm_decode.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from _common import write_results  # benchmarks/ is on sys.path as a script
from roofline import last_level_cache_bytes, read_bandwidth

from edge_sdk.api import convert_llm, load

PROMPT = (
    "Write a short explanation of how a hash table works, including how collisions are handled, why the load "
    "factor matters, and what the average and worst-case lookup costs are.\n\nA hash table is"
)


def _timed(stream, n_prompt: int) -> tuple[float, float]:
    """(prompt tokens/s, decode tokens/s) of a token stream."""
    start, first, pieces = time.perf_counter(), None, 0
    for _ in stream:
        pieces += 1
        first = first or time.perf_counter()
    end = time.perf_counter()
    if first is None:
        raise RuntimeError("the model produced no tokens for the benchmark prompt")
    return n_prompt / (first - start), (pieces - 1) / (end - first) if pieces > 1 else 0.0


def bench_variant(path: Path, session, rounds: int, tokens: int, threads: int) -> dict:
    import llama_cpp

    direct = llama_cpp.Llama(str(path), n_ctx=2048, n_threads=threads, verbose=False)
    sdk_p, sdk_d, dir_p, dir_d = [], [], [], []
    for r in range(rounds):
        prompt = f"[{r}] {PROMPT}"  # a new prefix each round, so neither side reuses a cached prompt
        n_prompt = len(direct.tokenize(prompt.encode()))
        options = {"max_tokens": tokens, "temperature": 0.0, "top_p": 1.0, "top_k": 1}
        p, d = _timed(session.generate(prompt, **options), n_prompt)
        sdk_p.append(p)
        sdk_d.append(d)
        p, d = _timed(
            (c["choices"][0]["text"] for c in direct.create_completion(prompt, stream=True, **options)), n_prompt
        )
        dir_p.append(p)
        dir_d.append(d)
    direct.close()
    med = statistics.median
    return {
        "sdk_prompt_tps": med(sdk_p),
        "sdk_decode_tps": med(sdk_d),
        "direct_prompt_tps": med(dir_p),
        "direct_decode_tps": med(dir_d),
        "decode_ratio": med(sdk_d) / med(dir_d),
        "prompt_ratio": med(sdk_p) / med(dir_p),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quantize", default="f16,q8_0,q4_0,q4_k_m")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    bandwidth = read_bandwidth(os.cpu_count() or 1, 16 * last_level_cache_bytes())
    with tempfile.TemporaryDirectory(prefix="llm-bench-") as tmp:
        start = time.perf_counter()
        bundle = convert_llm("zoo:smollm2", quantize=args.quantize, output=Path(tmp) / "b", allow_failed=True)
        convert_s = time.perf_counter() - start
        rows = []
        for variant in bundle.manifest.variants:
            path = bundle.root / variant.files[0].path
            acc = variant.accuracy
            assert acc is not None
            ppl = acc.metric("perplexity")
            assert ppl is not None and ppl.reference is not None
            with load(bundle, variant.id, threads=args.threads) as session:
                speed = bench_variant(path, session, args.rounds, args.tokens, args.threads)
            row = {
                "variant": variant.id,
                "size_mb": variant.size_bytes / 1e6,
                "ppl": ppl.value,
                "delta_ppl": ppl.value - ppl.reference,
                "kld": acc.metric("mean_kl").value,  # type: ignore[union-attr]
                "top1": acc.metric("top1_agreement").value,  # type: ignore[union-attr]
                "passed": acc.passed,
                **speed,
                "bandwidth_share": variant.size_bytes * speed["sdk_decode_tps"] / bandwidth,
            }
            rows.append(row)
            print(
                f"{row['variant']:<12} {row['size_mb']:7.1f} MB  dPPL {row['delta_ppl']:+7.3f}  KLD {row['kld']:.4f}  "
                f"prompt {row['sdk_prompt_tps']:7.1f} tok/s (x{row['prompt_ratio']:.3f})  "
                f"decode {row['sdk_decode_tps']:6.1f} tok/s (x{row['decode_ratio']:.3f} of direct)  "
                f"{100 * row['bandwidth_share']:.0f}% of bandwidth limit"
            )
    result = {
        "threads": args.threads,
        "read_bandwidth_all_cores_gb_s": bandwidth / 1e9,
        "reference_ppl": ppl.reference,
        "convert_seconds": convert_s,
        "rounds": args.rounds,
        "decode_tokens": args.tokens,
        "variants": rows,
    }
    print(f"read bandwidth {bandwidth / 1e9:.1f} GB/s (all cores)")
    write_results("llm_decode", result)


if __name__ == "__main__":
    main()
