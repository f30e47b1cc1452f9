"""HF directory -> GGUF f16 + q8_0 + q4_k_m: our converter against llama.cpp's own, on the same machine.

    python benchmarks/gguf_convert.py [--family llama] [--rounds 3] [--quick]

The model is a random-weight decoder of SmolLM2-135M's shape (hidden 576, 30 layers, 49,152 tokens; `--quick`:
hidden 256, 8 layers) built from transformers' config class of `--family`, with SmolLM2's tokenizer, made decisive
as a trained model is (llm_families.make_decisive: with every weight at 0.2 the residual stream explodes with depth
and q8_0 measured KL 0.24 on the quick shape; see the README). Two
comparisons, each alternated round by round so machine noise hits both, medians compared:

- writer: our HfSource + write_gguf for f16 and q8_0 vs llama.cpp's `convert_hf_to_gguf.py` (from the
  llama-cpp-python 0.3.36 sdist, as the tests take it) run twice, --outtype f16 and q8_0 (goal: ratio <= 1.0);
- full: our measured convert (`edge_sdk.convert_llm`, f16,q8_0,q4_k_m: export, run each variant in llama.cpp,
  KL / top-1 / perplexity, golden set, bundle) vs the reference pair: the converter for f16 and q8_0, then
  llama.cpp's quantizer (the `llama-quantize` equivalent) f16 -> q4_k_m (goal: ratio <= 1.5).

Writes benchmarks/results/gguf_convert.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "converters"))  # the tiny-model builders and the reference runner

from _common import write_results  # noqa: E402  # benchmarks/ is on sys.path as a script
from llm_families import FAMILIES, build_family, run_reference, smollm2_tokenizer_dir  # noqa: E402


def ours_writer(directory: Path, out: Path) -> None:
    from converters.gguf.hf_source import HfSource
    from converters.gguf.writer import write_gguf
    from edge_sdk.types import QuantScheme

    model = HfSource(directory).load()
    for scheme in (QuantScheme.FP16, QuantScheme.Q8_0):
        write_gguf(model, out / f"ours-{scheme.value}.gguf", scheme)


def reference_writer(directory: Path, out: Path) -> None:
    run_reference([(directory, t, out / f"ref-{t}.gguf") for t in ("f16", "q8_0")])


def ours_full(directory: Path, out: Path) -> None:
    import edge_sdk

    # the model is built decisive (llm_families.make_decisive), so its variants pass the default gate; a failed one
    # would still spend the time of every measurement
    edge_sdk.convert_llm(
        directory, quantize="f16,q8_0,q4_k_m", output=out / "bundle", overwrite=True, allow_failed=True
    )


def reference_full(directory: Path, out: Path) -> None:
    from converters.gguf.writer import llama_quantize

    reference_writer(directory, out)
    llama_quantize(out / "ref-f16.gguf", out / "ref-q4_k_m.gguf", "LLAMA_FTYPE_MOSTLY_Q4_K_M")


def timed(fn: Callable[[Path, Path], None], directory: Path) -> float:
    with tempfile.TemporaryDirectory(prefix="edge-bench-") as tmp:
        start = time.perf_counter()
        fn(directory, Path(tmp))
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--family", default="llama", choices=[f.name for f in FAMILIES])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a smaller model (hidden 256, 8 layers)")
    args = parser.parse_args()
    family = next(f for f in FAMILIES if f.name == args.family)
    shape = (
        {"hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 8, "num_attention_heads": 4,
         "num_key_value_heads": 2}
        if args.quick
        else {"hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
              "num_key_value_heads": 3}
    )  # fmt: skip
    sized = type(family)(family.name, family.config_class, family.model_class, {**family.overrides, **shape},
                         family.tokenizer, family.tokenizer_class)  # fmt: skip
    if sized.tokenizer != "smollm2":
        raise SystemExit(f"--family {args.family} uses a SentencePiece test vocabulary; pick a BPE family")
    with tempfile.TemporaryDirectory(prefix="edge-bench-model-") as tmp:
        directory = Path(tmp) / f"bench-{family.name}"
        build_family(sized, directory, {"smollm2": smollm2_tokenizer_dir()}, decisive=True)
        size = sum(p.stat().st_size for p in directory.iterdir())
        print(f"{family.name}: {size / 1e6:.0f} MB of safetensors, {args.rounds} interleaved rounds")
        rows = {}
        for label, ours, reference, goal in (
            ("writer f16+q8_0", ours_writer, reference_writer, 1.0),
            ("full f16+q8_0+q4_k_m", ours_full, reference_full, 1.5),
        ):
            ours_s, ref_s = [], []
            for _ in range(args.rounds):
                ours_s.append(timed(ours, directory))
                ref_s.append(timed(reference, directory))
            ratio = statistics.median(ours_s) / statistics.median(ref_s)
            rows[label] = {"ours_median_s": statistics.median(ours_s), "reference_median_s": statistics.median(ref_s),
                           "ratio_ours_over_reference": ratio, "goal": goal, "met": ratio <= goal,
                           "ours_s": ours_s, "reference_s": ref_s}  # fmt: skip
            print(f"  {label:24s} ours {statistics.median(ours_s):7.2f} s   reference {statistics.median(ref_s):7.2f} s"
                  f"   ratio {ratio:.2f} (goal <= {goal}){'' if ratio <= goal else '  NOT MET'}")  # fmt: skip
    result = {"family": family.name, "model_bytes": size, "quick": args.quick, "rounds": args.rounds,
              "results": rows}  # fmt: skip
    write_results("gguf_convert", result)


if __name__ == "__main__":
    main()
