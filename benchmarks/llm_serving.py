"""LLM serving features, as ratios in one run: prompt cache, speculative decoding, structured output, and the
daemon against `python -m llama_cpp.server` on the same GGUF file for the same requests.

    python benchmarks/llm_serving.py [--rounds 3] [--threads 2] [--tokens 128]

Four servers on loopback, all on the packaged SmolLM2 Q4_1 file with the same threads and context:
  daemon         `edge-sdk serve` as shipped (prompt cache on, no drafting)
  daemon-nocache `--prompt-cache-mb 0`: every prompt evaluated whole
  daemon-spec    `--speculative prompt-lookup`
  llama-server   `python -m llama_cpp.server` (its defaults; it reuses the prefix of the previous request)
Requests are streamed (SSE) with the plain HTTP client and alternated between servers round by round, so machine
noise hits all alike; each number is a median.
  - TTFT on a shared ~1,000-token system prompt, with requests of two conversations (two system prompts)
    interleaved, as a device serving two apps sees them. Goal: cache ÷ no cache ≤ 0.5.
  - Decode tokens/s on an input-grounded task (repeat a document) and on free text, with and without drafting.
    Goal: ≥ 1.3× on the grounded task.
  - Structured output (a json_schema) against free text on the same question: tokens/s ratio.
Writes benchmarks/results/llm_serving.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

RESULTS = Path(__file__).parent / "results"
MANUAL_FACT = (
    "Section {i}. The Lumen {i} lamp has {n} brightness levels set with the round button; its colour "
    "temperature goes from 2700 K to 6500 K with the slider on the arm; it charges over USB-C in {h} hours. "
)
DOCUMENT = (
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. It is named after "
    "the engineer Gustave Eiffel, whose company designed and built the tower from 1887 to 1889. Locally "
    "nicknamed La dame de fer, it was constructed as the centrepiece of the 1889 World's Fair, and to crown the "
    "centennial anniversary of the French Revolution. Although initially criticised by some of France's leading "
    "artists and intellectuals for its design, it has since become a global cultural icon of France and one of "
    "the most recognisable structures in the world. The tower received 5,889,000 visitors in 2022. The tower is "
    "330 metres tall, about the same height as an 81-storey building, and the tallest structure in Paris."
)
CITY = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 40}, "country": {"type": "string", "maxLength": 40},
                   "landmarks": {"type": "array", "items": {"type": "string", "maxLength": 40}, "maxItems": 3}},
    "required": ["city", "country", "landmarks"],
    "additionalProperties": False,
}  # fmt: skip


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _server(cmd: list[str], ready: str, log: Path) -> Iterator[str]:
    port = _port()
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        process = subprocess.Popen([*cmd, "--port", str(port)], stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                if process.poll() is not None:
                    raise RuntimeError(f"{cmd[:4]} exited with {process.returncode}; see {log}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{url}{ready}", timeout=2).status_code == 200:
                        break
                time.sleep(0.3)
            else:
                raise RuntimeError(f"{cmd[:4]} did not start; see {log}")
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()


def _stream(url: str, messages: list[dict], max_tokens: int, **extra: object) -> dict:
    """TTFT, decode tokens/s and the text of one streamed chat request."""
    body = {"model": "smollm2", "messages": messages, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            **extra}  # fmt: skip
    start, first, chunks, text, usage = time.perf_counter(), None, 0, [], None
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=600) as reply:
        reply.raise_for_status()
        for line in reply.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            usage = event.get("usage") or usage
            for choice in event.get("choices", []):
                if content := (choice.get("delta") or {}).get("content"):
                    first = first or time.perf_counter()
                    chunks += 1
                    text.append(content)
    end = time.perf_counter()
    tokens = (usage or {}).get("completion_tokens") or chunks  # llama_cpp.server: one chunk per token
    ttft = (first or end) - start
    return {"ttft_s": ttft, "tokens": tokens, "tokens_per_s": (tokens - 1) / (end - first) if first and tokens > 1
            and end > first else 0.0, "text": "".join(text)}  # fmt: skip


def _median(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=128, help="tokens generated in the decode measurements")
    args = parser.parse_args()

    from converters.gguf.zoo import smollm2_as_shipped, smollm2_gguf_path

    work = Path(tempfile.mkdtemp(prefix="llm-serving-"))
    bundle = smollm2_as_shipped(work / "smollm2")
    common = ["--threads", str(args.threads), "--context", "2048", "--concurrency", "1"]
    serve = [sys.executable, "-m", "edge_sdk.cli", "serve", str(bundle.root), *common]
    servers = {
        "daemon": serve,
        "daemon-nocache": [*serve, "--prompt-cache-mb", "0"],
        "daemon-spec": [*serve, "--speculative", "prompt-lookup"],
        "llama-server": [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(smollm2_gguf_path()),
            "--model_alias",
            "smollm2",
            "--n_threads",
            str(args.threads),
            "--n_ctx",
            "2048",
            "--host",
            "127.0.0.1",
        ],
    }
    with contextlib.ExitStack() as stack:
        urls = {}
        for name, cmd in servers.items():
            ready = "/v1/models" if name == "llama-server" else "/health/live"
            urls[name] = stack.enter_context(_server(cmd, ready, work / f"{name}.log"))
            print(f"started {name} at {urls[name]}", flush=True)
        report = {"machine": platform.processor() or platform.machine(), "threads": args.threads,
                  "rounds": args.rounds, "cache": _cache(urls, args.rounds), "speculative": _speculative(urls, args),
                  "structured": _structured(urls["daemon"], args)}  # fmt: skip
    _print(report)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "llm_serving.json").write_text(json.dumps(report, indent=2))
    print(f"wrote {RESULTS / 'llm_serving.json'}")


def _system(app: int) -> str:
    return "".join(MANUAL_FACT.format(i=app * 100 + i, n=3 + i % 4, h=2 + i % 3) for i in range(16))


def _cache(urls: dict[str, str], rounds: int) -> dict:
    """TTFT of questions under two long system prompts, the two conversations interleaved."""
    print("measuring prompt cache: TTFT on shared system prompts", flush=True)
    questions = ["How long does charging take?", "How many brightness levels are there?", "Which slider sets the "
                 "colour?", "What is the warmest colour temperature?"]  # fmt: skip
    targets = ["daemon", "daemon-nocache", "llama-server"]
    rows: dict[str, list[dict]] = {t: [] for t in targets}
    for t in targets:  # warm-up: the first request of each conversation fills whatever cache there is
        for app in (0, 1):
            _stream(urls[t], [{"role": "system", "content": _system(app)}, {"role": "user", "content": "Hi"}], 1)
    for r in range(rounds):
        for app in (0, 1):
            ask = [{"role": "system", "content": _system(app)}, {"role": "user", "content": questions[r % 4]}]
            for t in targets:
                rows[t].append(_stream(urls[t], ask, 2))
    ttft = {t: _median(rows[t], "ttft_s") for t in targets}
    return {
        "median_ttft_s": ttft,
        "ratio_cache_over_nocache": ttft["daemon"] / ttft["daemon-nocache"],
        "ratio_daemon_over_llama_server": ttft["daemon"] / ttft["llama-server"],
        "goal_ratio_cache_over_nocache_at_most": 0.5,
    }


def _speculative(urls: dict[str, str], args: argparse.Namespace) -> dict:
    print("measuring speculative decoding: decode tokens/s", flush=True)
    tasks = {
        "grounded": [{"role": "user", "content": f"{DOCUMENT}\n\nRepeat the text above exactly, word for word."}],
        "free": [{"role": "user", "content": "Write a short story about a lighthouse keeper and a storm."}],
    }
    targets = ["daemon", "daemon-spec", "llama-server"]
    out: dict[str, dict] = {}
    for task, messages in tasks.items():
        rows: dict[str, list[dict]] = {t: [] for t in targets}
        for _ in range(args.rounds):
            for t in targets:
                rows[t].append(_stream(urls[t], messages, args.tokens))
        speed = {t: _median(rows[t], "tokens_per_s") for t in targets}
        out[task] = {
            "median_tokens_per_s": speed,
            "ratio_spec_over_plain": speed["daemon-spec"] / speed["daemon"],
            "ratio_spec_over_llama_server": speed["daemon-spec"] / speed["llama-server"],
            "same_text_with_and_without_drafting": rows["daemon-spec"][0]["text"] == rows["daemon"][0]["text"],
        }
    out["goal_grounded_ratio_at_least"] = 1.3
    return out


def _structured(url: str, args: argparse.Namespace) -> dict:
    print("measuring structured output: json_schema vs free text", flush=True)
    ask = [{"role": "user", "content": "Describe Paris as JSON with its city, country and three landmarks."}]
    schema = {"type": "json_schema", "json_schema": {"name": "city", "schema": CITY, "strict": True}}
    free, constrained = [], []
    for _ in range(args.rounds):
        free.append(_stream(url, ask, args.tokens))
        constrained.append(_stream(url, ask, args.tokens, response_format=schema))
    speed_free, speed_json = _median(free, "tokens_per_s"), _median(constrained, "tokens_per_s")
    return {"median_tokens_per_s": {"free_text": speed_free, "json_schema": speed_json},
            "ratio_json_over_free": speed_json / speed_free if speed_free else None,
            "json_answer": constrained[0]["text"]}  # fmt: skip


def _print(report: dict) -> None:
    cache = report["cache"]
    print(f"\nTTFT, shared ~1,000-token system prompts, two conversations interleaved (median of {report['rounds']})")
    for name, value in cache["median_ttft_s"].items():
        print(f"  {name:15s} {value * 1000:8.0f} ms")
    print(f"  cache / no cache: {cache['ratio_cache_over_nocache']:.2f}  (goal <= 0.5);"
          f"  daemon / llama-server: {cache['ratio_daemon_over_llama_server']:.2f}")  # fmt: skip
    for task in ("grounded", "free"):
        row = report["speculative"][task]
        print(f"\ndecode tokens/s, {task} task")
        for name, value in row["median_tokens_per_s"].items():
            print(f"  {name:15s} {value:8.1f}")
        same = row["same_text_with_and_without_drafting"]
        print(f"  drafting / plain: {row['ratio_spec_over_plain']:.2f}; drafting / llama-server: "
              f"{row['ratio_spec_over_llama_server']:.2f}; same text: {same}")  # fmt: skip
    structured = report["structured"]
    print("\nstructured output (json_schema) vs free text, decode tokens/s")
    for name, value in structured["median_tokens_per_s"].items():
        print(f"  {name:15s} {value:8.1f}")
    print(f"  json / free: {structured['ratio_json_over_free']:.2f}")


if __name__ == "__main__":
    main()
