"""SmolLM2 served by the daemon, driven by the official `openai` client, unchanged."""

from __future__ import annotations

import httpx
import openai
import pytest

pytestmark = pytest.mark.slow

QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]


@pytest.fixture(scope="module")
def client(llm_daemon) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{llm_daemon}/v1", api_key="unused", max_retries=0, timeout=120)


def test_models_lists_both_kinds(client):
    assert {m.id for m in client.models.list()} == {"smollm2", "digits-cnn"}


def test_chat_completion(client):
    reply = client.chat.completions.create(model="smollm2", messages=QUESTION, temperature=0, max_tokens=16)
    assert "Paris" in reply.choices[0].message.content
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.completion_tokens > 0
    assert (
        reply.usage.prompt_tokens > 10
        and reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    )


def test_chat_streaming(client):
    stream = client.chat.completions.create(
        model="smollm2", messages=QUESTION, temperature=0, max_tokens=16, stream=True
    )
    pieces = [c.choices[0].delta.content or "" for c in stream]
    assert len(pieces) > 2 and "Paris" in "".join(pieces)


def test_completion_stream_is_sse_ending_in_done(llm_daemon):
    body = {"model": "smollm2", "prompt": "The capital of France is", "max_tokens": 8, "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{llm_daemon}/v1/completions", json=body, timeout=120) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    assert all(line.startswith("data: ") for line in lines)


def test_embeddings(client):
    result = client.embeddings.create(model="smollm2", input=["a cat", "a kitten", "tax law"])
    vectors = [d.embedding for d in result.data]
    assert len(vectors) == 3 and len(vectors[0]) == 576  # SmolLM2-135M hidden size

    def cos(a, b):
        import numpy as np

        a, b = np.asarray(a), np.asarray(b)
        return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))

    assert cos(vectors[0], vectors[1]) > cos(vectors[0], vectors[2])


def test_errors_in_openai_shape(client):
    with pytest.raises(openai.NotFoundError, match="not installed here"):
        client.chat.completions.create(model="gpt-4o", messages=QUESTION)
    with pytest.raises(openai.BadRequestError, match="exceeds the context"):
        client.completions.create(model="smollm2", prompt="word " * 3000, max_tokens=16)
    with pytest.raises(openai.BadRequestError, match="tensor model"):
        client.chat.completions.create(model="digits-cnn", messages=QUESTION)
    # ...and it still answers.
    assert client.chat.completions.create(model="smollm2", messages=QUESTION, max_tokens=4).choices


def test_client_that_disconnects_stops_generation(llm_daemon, client):
    body = {"model": "smollm2", "prompt": "Once upon a time", "max_tokens": 1500, "temperature": 0.8, "stream": True}
    before = _generated(llm_daemon)
    with httpx.stream("POST", f"{llm_daemon}/v1/completions", json=body, timeout=120) as r:
        for i, _ in enumerate(r.iter_lines()):
            if i > 5:
                break  # leave mid-stream
    # The model is free again soon (concurrency 1) and did not generate the remaining ~1,500 tokens.
    assert client.completions.create(model="smollm2", prompt="Hi", max_tokens=4).choices
    assert _generated(llm_daemon) - before < 500


def _generated(url: str) -> float:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith('edge_generated_tokens_total{model="smollm2"}'):
            return float(line.split()[-1])
    return 0.0


def test_a_board_serves_the_context_it_is_given(serve_bundles, smollm2_served_bundle):
    """`serve --context 256`: a short request is answered; a longer one is refused naming the limit."""
    from edge_sdk.apps.daemon.pool import DirectorySource

    with serve_bundles(DirectorySource([smollm2_served_bundle.root]), context=256) as url:
        short = {"model": "smollm2", "messages": QUESTION, "max_tokens": 8, "temperature": 0}
        assert httpx.post(f"{url}/v1/chat/completions", json=short, timeout=120).status_code == 200
        long = {**short, "messages": [{"role": "user", "content": "Tell me about foxes. " * 60}]}
        r = httpx.post(f"{url}/v1/chat/completions", json=long, timeout=120)
        assert r.status_code == 400 and "context of 256" in r.json()["error"]["message"]


def test_the_daemon_counts_a_model_as_fit_estimates_it(serve_bundles, smollm2_served_bundle):
    """The memory budget and the router's no_memory decision use `edge-sdk fit`'s estimate (KV cache at the
    served context included), not the file size: a longer context costs more of the budget."""
    from edge_sdk.apps.daemon.pool import DirectorySource
    from edge_sdk.fitting import fit

    report = next(iter(fit(smollm2_served_bundle.root, "host", context=4096, measure=False).values()))
    expected = report.estimated_peak_bytes - report.breakdown["python"]
    with serve_bundles(DirectorySource([smollm2_served_bundle.root]), context=4096) as url:
        chat = {"model": "smollm2", "messages": QUESTION, "max_tokens": 2, "temperature": 0}
        assert httpx.post(f"{url}/v1/chat/completions", json=chat, timeout=120).status_code == 200
        metrics = httpx.get(f"{url}/metrics").text
    counted = next(
        float(line.split()[-1]) for line in metrics.splitlines() if line.startswith("edge_models_loaded_bytes")
    )
    assert counted == pytest.approx(expected, rel=1e-5) and report.breakdown["kv_cache"] > 0
    assert counted > smollm2_served_bundle.variants[0].size_bytes + report.breakdown["kv_cache"]
