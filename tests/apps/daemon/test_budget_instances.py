"""The memory budget counts every engine instance the daemon opens: SmolLM2's embeddings run in a second
llama.cpp instance, which is counted (as `edge-sdk fit` estimates it) and makes room like a model would."""

from __future__ import annotations

import httpx
import openai
import pytest

from edge_sdk.apps.daemon.pool import DirectorySource

pytestmark = pytest.mark.slow

MiB = 1024 * 1024


def _metric(url: str, name: str) -> float:
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.split()[-1])
    return 0.0


def _estimate(bundle, context: int) -> int:
    from device_profiles.estimate import PROCESS_BYTES, ModelFacts, estimate_memory

    variant = bundle.variants[0]
    return estimate_memory(ModelFacts.of_variant(variant, bundle.root), context).peak_bytes - PROCESS_BYTES


def test_chat_and_embeddings_on_one_model_are_both_counted(serve_bundles, smollm2_served_bundle, onnx_bundle):
    from runtimes.llama_cpp_adapter import EMBED_CONTEXT

    chat_bytes = _estimate(smollm2_served_bundle, 2048)
    # A session at 512 tokens, plus llama.cpp's float32 logits for a 512-token batch and for 256 sequences
    # (SmolLM2: 49,152 tokens in the vocabulary, hidden size 576).
    embed_bytes = _estimate(smollm2_served_bundle, EMBED_CONTEXT) + 4 * (512 * 49152 + 256 * (49152 + 576))
    source = DirectorySource([smollm2_served_bundle.root, onnx_bundle.root])
    # The tensor model's share, measured with it alone loaded: no preload (it would race the metric read and,
    # when it won, count SmolLM2 too).
    with serve_bundles(source, memory_budget_bytes=10 * 1024 * MiB, preload=False) as url:
        x = {"input": {"dtype": "float32", "shape": [1, 1, 8, 8], "data": [0.0] * 64}}
        assert httpx.post(f"{url}/v1/infer/digits-cnn", json={"inputs": x}, timeout=60).status_code == 200
        digits_bytes = int(_metric(url, "edge_models_loaded_bytes"))

    # Room for the chat instance and the tensor model, not for the embeddings instance beside them.
    budget = chat_bytes + digits_bytes + embed_bytes // 2
    with serve_bundles(source, memory_budget_bytes=budget) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)
        assert httpx.post(f"{url}/v1/infer/digits-cnn", json={"inputs": x}, timeout=60).status_code == 200
        chat = client.chat.completions.create(  # both fit
            model="smollm2", messages=[{"role": "user", "content": "Hi"}], max_tokens=2, temperature=0
        )
        assert chat.choices
        assert _metric(url, "edge_models_loaded_bytes") == pytest.approx(chat_bytes + digits_bytes, rel=1e-5)
        assert client.embeddings.create(model="smollm2", input=["a cat"]).data
        # The embeddings instance is counted, and the idle tensor model made room for it.
        assert _metric(url, "edge_models_loaded_bytes") == pytest.approx(chat_bytes + embed_bytes, rel=1e-5)
        assert _metric(url, 'edge_model_evictions_total{model="digits-cnn"}') == 1
        loaded = {m.id: m.model_extra["loaded"] for m in client.models.list()}
        assert loaded == {"smollm2": True, "digits-cnn": False}
        # Counted once: a second embeddings request reuses the instance.
        assert client.embeddings.create(model="smollm2", input=["a dog"]).data
        assert _metric(url, "edge_models_loaded_bytes") == pytest.approx(chat_bytes + embed_bytes, rel=1e-5)
    assert embed_bytes > 250 * MiB  # measured: a full batch grows the process by 323 MiB


def test_with_a_cloud_embeddings_that_would_not_fit_go_there(serve_bundles, serve_app, smollm2_served_bundle):
    """The router counts the embeddings instance too: chat fits and stays; embeddings would not, so they go to
    the cloud (reason no_memory) instead of growing the device past its budget."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def cloud_embeddings(request: Request) -> JSONResponse:
        body = await request.json()
        data = [{"object": "embedding", "index": 0, "embedding": [0.25, 0.5]}]
        return JSONResponse({"object": "list", "data": data, "model": body["model"], "usage": {"prompt_tokens": 2,
                             "total_tokens": 2}})  # fmt: skip

    chat_bytes = _estimate(smollm2_served_bundle, 2048)
    cloud = Starlette(routes=[Route("/v1/embeddings", cloud_embeddings, methods=["POST"])])
    with (
        serve_app(cloud) as cloud_url,
        serve_bundles(
            DirectorySource([smollm2_served_bundle.root]),
            cloud_url=cloud_url,
            memory_budget_bytes=chat_bytes + 64 * MiB,
        ) as url,
    ):
        chat = {"model": "smollm2", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
        local = httpx.post(f"{url}/v1/chat/completions", json=chat, timeout=120)
        assert local.headers["x-edge-route"] == "local"
        r = httpx.post(f"{url}/v1/embeddings", json={"model": "smollm2", "input": "a cat"}, timeout=60)
        assert (r.headers["x-edge-route"], r.headers["x-edge-route-reason"]) == ("cloud", "no_memory")
        assert r.json()["data"][0]["embedding"] == [0.25, 0.5]
        assert _metric(url, "edge_models_loaded_bytes") == pytest.approx(chat_bytes, rel=1e-5)  # nothing opened
