"""Shared, session-scoped artifacts: the digits data and one converted ONNX bundle, built once per run."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

# The cloud played in tests (receiver_app, gateway_helpers) lives in tests/cloud_sync; the daemon's and the
# flasher's tests use it too, whichever folder pytest collects first.
sys.path.insert(0, str(Path(__file__).parent / "cloud_sync"))
sys.path.insert(0, str(Path(__file__).parent))  # helpers beside this file: system_packages, headless

# The CLI's rich consoles read the width once, at import: make it wide enough for the tables under test.
os.environ.setdefault("COLUMNS", "200")


@pytest.fixture(scope="session")
def digits():
    from converters.zoo import digits_data

    return digits_data()


@pytest.fixture(scope="session")
def digits_model():
    from converters.zoo import digits_cnn

    return digits_cnn()


ONNX_SCHEMES = ["none", "int8-dynamic", "int8-static", "fp16"]


@pytest.fixture(scope="session")
def onnx_bundle(tmp_path_factory, digits, digits_model):
    """The digits CNN through ONNX with every quantization, evaluated on the held-out split."""
    import edge_sdk

    out = tmp_path_factory.mktemp("onnx") / "digits-cnn"
    return edge_sdk.convert(
        digits_model,
        {"input": digits.train_x[:64]},
        backend="onnx",
        quantize=ONNX_SCHEMES,
        profile=["rpi5", "rpi4"],
        output=out,
        name="digits-cnn",
        calibration={"input": digits.train_x[:512]},
        eval_data=({"input": digits.test_x}, digits.test_y),
    )


@pytest.fixture(scope="session")
def bert_dir(tmp_path_factory):
    """A tiny random-weight BERT (hidden 64, 2 layers) saved as transformers does, with a WordPiece tokenizer."""
    from converters.text_zoo import tiny_text_encoder

    return tiny_text_encoder(tmp_path_factory.mktemp("hf") / "tiny-bert")


@pytest.fixture(scope="session")
def bert_bundle(bert_dir, tmp_path_factory):
    """The tiny BERT as a sentence-embedding bundle: ONNX and ExecuTorch fp32, the tokenizer carried."""
    import edge_sdk

    out = tmp_path_factory.mktemp("bert-bundle") / "tiny-bert"
    return edge_sdk.convert(str(bert_dir), backend="onnx,executorch", quantize="none", output=out)


@pytest.fixture(scope="session")
def classifier_bundle(tmp_path_factory):
    """A tiny BERT sequence classifier with three labels, as an ONNX bundle."""
    import edge_sdk
    from converters.text_zoo import tiny_text_encoder

    directory = tiny_text_encoder(
        tmp_path_factory.mktemp("hf") / "tiny-sentiment", labels=("negative", "neutral", "positive"), seed=1
    )
    return edge_sdk.convert(str(directory), output=tmp_path_factory.mktemp("clf") / "tiny-sentiment")


def copy_bundle(bundle_root: Path, dest: Path) -> Path:
    """A private copy of a bundle directory that a test may damage."""
    import shutil

    shutil.copytree(bundle_root, dest)
    return dest


@pytest.fixture
def bundle_copy(onnx_bundle, tmp_path) -> Path:
    return copy_bundle(onnx_bundle.root, tmp_path / "copy")


@pytest.fixture
def sample(digits) -> dict[str, np.ndarray]:
    return {"input": digits.test_x[:8]}


# --- the cloud played on loopback: a test's own app in uvicorn, and llama.cpp's OpenAI-compatible server ---


def free_loopback_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def serve_app():
    """`with serve_app(asgi_app) as url:` — a real uvicorn server on loopback, in a thread."""
    import contextlib
    import threading
    import time

    import uvicorn

    @contextlib.contextmanager
    def running(app):
        port = free_loopback_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True
            thread.join(timeout=10)

    return running


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory):
    """`python -m llama_cpp.server` with the embedded SmolLM2, as the cloud (context 4096: longer than a device's)."""
    import subprocess
    import sys
    import time

    import httpx

    from converters.gguf.zoo import smollm2_gguf_path

    port = free_loopback_port()
    log = (tmp_path_factory.mktemp("llama-server") / "server.log").open("wb")
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2_gguf_path()), "--model_alias", "smollm2",
           "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096", "--n_threads", "2"]  # fmt: skip
    process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited with {process.returncode}; see {log.name}")
            try:
                if httpx.get(f"{url}/v1/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            raise RuntimeError("llama_cpp.server did not start within 60 s")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


# --- a real headless browser for the pages (daemon status, gateway fleet, plan and bundle reports) ---


@pytest.fixture(scope="session")
def browser(tmp_path_factory):
    """Debian's chromium, installed when missing (skipped where it cannot be; under CI=true a failure)."""
    from headless import Browser, find_chromium
    from system_packages import ensure_package

    ensure_package(lambda: find_chromium() is not None, "chromium", "the page tests need a real browser")
    return Browser(find_chromium(), tmp_path_factory.mktemp("chromium"))


# One language model on three engines (tests/converters/test_llm_engines.py, tests/apps/daemon, export-app).
LLM_PROMPT = "The quick brown fox"


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> tuple[Path, list[int], list[int]]:
    """The model directory, the prompt's tokens and transformers' 16 greedy tokens after them."""
    import torch

    sys.path.insert(0, str(Path(__file__).parent / "converters"))
    from llm_families import FAMILIES, build_family, smollm2_tokenizer_dir

    family = next(f for f in FAMILIES if f.name == "llama")
    directory = tmp_path_factory.mktemp("tiny-llama") / "tiny-llama"
    model = build_family(family, directory, {"smollm2": smollm2_tokenizer_dir()})
    from tokenizers import Tokenizer

    prompt = Tokenizer.from_file(str(directory / "tokenizer.json")).encode(LLM_PROMPT, add_special_tokens=False).ids
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=16, do_sample=False, eos_token_id=None)
    return directory, list(prompt), out[0, len(prompt) :].tolist()


@pytest.fixture(scope="session")
def engines_bundle(tiny_llama, tmp_path_factory):
    """gguf-f32, executorch-f32, onnx-f32, executorch-int8-dynamic, executorch-8da4w, onnx-int4 of tiny_llama,
    converted once: ~130 s of CPU, 80% of it the three ExecuTorch exports (XNNPACK's passes, ~1 s a delegated
    subgraph). Two layers stay: the KV-cache and delegation checks count per layer."""
    import edge_sdk

    directory, _, _ = tiny_llama
    return edge_sdk.convert_llm(
        directory, backend=["gguf", "executorch", "onnx"], quantize=["f32", "int8-dynamic", "8da4w", "int4"],
        output=tmp_path_factory.mktemp("engines") / "bundle", eval_tokens=64, allow_failed=True, context=256,
    )  # fmt: skip
