"""A BERT-base-size text encoder served by the daemon vs ONNX Runtime called directly on the same file.

    python benchmarks/encoder.py [--rounds 5] [--quick]

Builds a random-weight BERT-base encoder in code (768 hidden, 12 layers, 12 heads; no download), converts it to
an ONNX fp32 bundle (sentence embedding, mean pooling, tokenizer.json carried), starts `edge-sdk serve` on loopback
as a separate process, and times, at batch 1 and 32 with texts of exactly 128 tokens, interleaved round by round:
  direct: the same tokenizer (`tokenizers`) + `onnxruntime.InferenceSession.run` on the bundle's model.onnx;
  daemon: `POST /v1/embeddings` (the OpenAI shape), HTTP keep-alive.
Prints per-request overhead (daemon - direct, ms) and embeddings/s each way; writes benchmarks/results/encoder.json.
`--quick` uses a 4-layer model (a smoke run; the numbers are then not BERT-base's).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from _common import free_port, wait_ready, write_results  # benchmarks/ is on sys.path as a script

SEQUENCE = 128


def _texts(tokenizer_json: Path, count: int) -> list[str]:
    """`count` different texts, each exactly SEQUENCE tokens with [CLS] and [SEP]."""
    from tokenizers import Tokenizer

    from converters.text_zoo import WORDS

    tok = Tokenizer.from_file(str(tokenizer_json))
    rng = np.random.default_rng(0)
    texts = []
    for _ in range(count):
        words: list[str] = []
        while len(tok.encode(" ".join(words)).ids) < SEQUENCE:
            words.append(str(rng.choice(WORDS)))
        while len(tok.encode(" ".join(words)).ids) > SEQUENCE:
            words.pop()
        while len(tok.encode(" ".join(words)).ids) < SEQUENCE:  # a last word too long: fill with one-piece words
            words.append("a")
        texts.append(" ".join(words))
    return texts


def _median_seconds(fn, calls: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()

    import onnxruntime as ort
    from tokenizers import Tokenizer

    import edge_sdk
    from converters.text_zoo import tiny_text_encoder
    from runtimes.onnxruntime_adapter import session_options

    layers = 4 if args.quick else 12
    work = Path(tempfile.mkdtemp(prefix="edge-bench-encoder-"))
    start = time.perf_counter()
    source = tiny_text_encoder(work / "bert-base", hidden=768, layers=layers, heads=12, max_positions=512)
    bundle = edge_sdk.convert(str(source), quantize="none", name="bert-base", output=work / "bundle")
    print(f"built and converted a {layers}-layer, 768-hidden encoder in {time.perf_counter() - start:.0f} s")
    tokenizer_json = bundle.path_of(bundle.manifest.preprocessing.tokenizer)
    texts = _texts(tokenizer_json, 32)

    tok = Tokenizer.from_file(str(tokenizer_json))
    opts = session_options()
    opts.intra_op_num_threads = 2  # as the daemon is started below
    direct = ort.InferenceSession(
        str(bundle.path_of(bundle.variant().files[0])), opts, providers=["CPUExecutionProvider"]
    )

    def run_direct(batch: list[str]) -> np.ndarray:
        encodings = tok.encode_batch(batch)
        feeds = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        }
        return direct.run(None, feeds)[0]

    port = free_port()
    daemon = subprocess.Popen(
        [sys.executable, "-m", "edge_sdk.cli", "serve", str(bundle.root), "--port", str(port), "--threads", "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    rows = []
    try:
        wait_ready(url, process=daemon)
        with httpx.Client(base_url=url, timeout=300) as client:

            def run_daemon(batch: list[str]) -> np.ndarray:
                response = client.post("/v1/embeddings", json={"model": "bert-base", "input": batch})
                response.raise_for_status()
                return np.array([d["embedding"] for d in response.json()["data"]], np.float32)

            check = run_daemon(texts[:2])  # also loads the model
            cos = np.sum(check * run_direct(texts[:2]), 1) / (
                np.linalg.norm(check, axis=1) * np.linalg.norm(run_direct(texts[:2]), axis=1)
            )
            assert cos.min() > 0.9999, f"the daemon and ORT disagree: cosine {cos}"
            for batch_size in (1, 32):
                batch = texts[:batch_size]
                calls = 5 if batch_size == 1 else 1
                d_times, s_times = [], []
                for _ in range(args.rounds):  # interleaved, so machine noise hits both alike
                    d_times.append(_median_seconds(lambda b=batch: run_direct(b), calls))
                    s_times.append(_median_seconds(lambda b=batch: run_daemon(b), calls))
                d, s = statistics.median(d_times), statistics.median(s_times)
                rows.append(
                    {
                        "batch": batch_size,
                        "sequence": SEQUENCE,
                        "direct_ms": d * 1e3,
                        "daemon_ms": s * 1e3,
                        "overhead_ms": (s - d) * 1e3,
                        "direct_embeddings_per_s": batch_size / d,
                        "daemon_embeddings_per_s": batch_size / s,
                        "ratio_daemon_over_direct_throughput": d / s,
                    }
                )
                print(
                    f"batch {batch_size:>2}: direct {d * 1e3:8.1f} ms ({batch_size / d:6.1f} emb/s) | "
                    f"daemon {s * 1e3:8.1f} ms ({batch_size / s:6.1f} emb/s) | overhead {(s - d) * 1e3:+.1f} ms"
                )
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
    result = {
        "model": f"random-weight BERT ({layers} layers, hidden 768, 12 heads), ONNX fp32",
        "rounds": args.rounds,
        "rows": rows,
    }
    write_results("encoder", result)


if __name__ == "__main__":
    main()
