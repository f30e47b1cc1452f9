"""The daemon serves /v1/chat/completions from an ExecuTorch and an ONNX Runtime GenAI variant as from llama.cpp,
through the official `openai` client; what these engines lack (grammars) is a 400 naming the engine."""

from __future__ import annotations

import httpx
import openai
import pytest

from edge_sdk.apps.daemon.pool import DirectorySource

pytestmark = pytest.mark.slow  # needs the engines bundle (tests/conftest.py: engines_bundle)

ENGINE_VARIANTS = ("executorch-f32", "onnx-f32", "gguf-f32")


@pytest.mark.parametrize("variant", ENGINE_VARIANTS)
def test_chat_through_the_openai_client(engines_bundle, serve_bundles, variant):
    name = engines_bundle.name
    with serve_bundles(DirectorySource([engines_bundle.root]), variants={"*": variant}) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)
        messages = [{"role": "user", "content": "Hello"}]
        reply = client.chat.completions.create(model=name, messages=messages, temperature=0, max_tokens=8)
        again = client.chat.completions.create(model=name, messages=messages, temperature=0, max_tokens=8)
        assert reply.choices[0].message.content == again.choices[0].message.content  # greedy: the same answer
        assert reply.usage.completion_tokens <= 8 and reply.usage.prompt_tokens > 0
        assert reply.choices[0].finish_reason in ("stop", "length")
        stream = client.chat.completions.create(model=name, messages=messages, temperature=0, max_tokens=8, stream=True)
        streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert streamed == reply.choices[0].message.content
        # What an engine lacks is refused with a 400 that names the option; the daemon keeps serving.
        bad = httpx.post(
            f"{url}/v1/chat/completions",
            json={"model": name, "messages": messages, "response_format": {"type": "json_object"}},
            timeout=60,
        )
        if variant.startswith("gguf"):  # llama.cpp has a grammar engine: structured output works there
            assert bad.status_code == 200, bad.text
        else:
            assert bad.status_code == 400 and "response_format" in bad.text
        assert client.chat.completions.create(model=name, messages=messages, max_tokens=2).choices
