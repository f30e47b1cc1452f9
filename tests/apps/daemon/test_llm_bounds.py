"""SmolLM2 behind the daemon: empty inputs are 400 (llama.cpp failed on them with a 500), an embeddings
request has a bounded number of inputs, and every OpenAI route has a per-request timeout that frees the engine."""

from __future__ import annotations

import time

import httpx
import pytest

from edge_sdk.apps.daemon.pool import DirectorySource

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def llm_source(smollm2_served_bundle):
    return DirectorySource([smollm2_served_bundle.root])


def test_empty_prompts_and_inputs_get_400_and_the_model_keeps_serving(llm_source, serve_bundles):
    with serve_bundles(llm_source, max_embedding_inputs=3) as url:
        post = lambda path, body: httpx.post(f"{url}{path}", json=body, timeout=120)  # noqa: E731
        refusals = [
            ("/v1/completions", {"model": "smollm2", "prompt": ""}, "prompt"),
            ("/v1/embeddings", {"model": "smollm2", "input": ""}, "input"),
            ("/v1/embeddings", {"model": "smollm2", "input": []}, "at least one text"),
            ("/v1/embeddings", {"model": "smollm2", "input": ["a cat", ""]}, "input"),
            ("/v1/embeddings", {"model": "smollm2", "input": ["a", "b", "c", "d"]}, "at most 3 per request"),
        ]
        for path, body, message in refusals:
            r = post(path, body)
            assert r.status_code == 400, (body, r.status_code, r.text)
            error = r.json()["error"]
            assert error["type"] == "invalid_request_error" and message in error["message"], (body, error)
        ok = post("/v1/embeddings", {"model": "smollm2", "input": ["a", "b", "c"]})
        assert ok.status_code == 200 and len(ok.json()["data"]) == 3
        done = post("/v1/completions", {"model": "smollm2", "prompt": "Hello", "max_tokens": 2, "temperature": 0})
        assert done.status_code == 200


def test_the_request_timeout_covers_completions_and_embeddings_and_frees_the_engine(llm_source, serve_bundles):
    with serve_bundles(llm_source, request_timeout_s=1.0, concurrency_per_model=1, max_embedding_inputs=8192) as url:
        warm = {"model": "smollm2", "prompt": "Hi", "max_tokens": 1}
        # Loading may take longer than the timeout: the load goes on, and a later request finds the model.
        deadline = time.monotonic() + 60
        while httpx.post(f"{url}/v1/completions", json=warm, timeout=120).status_code != 200:
            assert time.monotonic() < deadline
        long = {"model": "smollm2", "prompt": "Once upon a time", "max_tokens": 1500, "temperature": 0}
        start = time.monotonic()
        r = httpx.post(f"{url}/v1/completions", json=long, timeout=120)
        assert r.status_code == 504 and "longer than 1 s" in r.json()["error"]["message"]
        assert time.monotonic() - start < 10
        many = {"model": "smollm2", "input": [f"text number {i} about nothing in particular" for i in range(5000)]}
        start = time.monotonic()
        r = httpx.post(f"{url}/v1/embeddings", json=many, timeout=120)
        assert r.status_code == 504 and time.monotonic() - start < 10
        # The engine is released within a batch (16 texts), not after the 5,000: a short request gets through soon.
        deadline = time.monotonic() + 20
        while (r := httpx.post(f"{url}/v1/completions", json=warm, timeout=120)).status_code != 200:
            assert r.status_code == 504 and time.monotonic() < deadline, r.text
