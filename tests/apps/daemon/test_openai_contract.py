"""Every OpenAI request field is honoured, refused with a 400 naming it, or accepted as a no-op: the official
`openai` client against a real daemon on loopback serving the embedded SmolLM2."""

from __future__ import annotations

import base64
import collections

import httpx
import numpy as np
import openai
import pytest

pytestmark = pytest.mark.slow

QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
COUNTING = "Count with me: 1, 2, 1, 2, 1, 2, 1, 2, 1, 2,"


@pytest.fixture(scope="module")
def client(llm_daemon) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{llm_daemon}/v1", api_key="unused", max_retries=0, timeout=120)


def _chat(client, **options):
    options.setdefault("model", "smollm2")
    return client.chat.completions.create(messages=options.pop("messages", QUESTION), **options)


def test_max_completion_tokens_cuts_the_answer_and_finish_reason_says_length(client):
    cut = _chat(client, max_completion_tokens=5, temperature=0, messages=[{"role": "user", "content": "Tell a story."}])
    assert cut.usage.completion_tokens == 5 and cut.choices[0].finish_reason == "length"
    whole = _chat(client, max_completion_tokens=40, temperature=0)
    assert whole.choices[0].finish_reason == "stop" and whole.usage.completion_tokens < 40
    text = client.completions.create(model="smollm2", prompt="Once upon a time", max_tokens=3, temperature=0)
    assert text.choices[0].finish_reason == "length" and text.usage.completion_tokens == 3


def test_stream_starts_with_the_role_and_ends_with_usage(client):
    chunks = list(_chat(client, temperature=0, max_tokens=16, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "Paris" in text
    last = chunks[-1]
    assert last.choices == [] and last.usage.completion_tokens > 0 and last.usage.prompt_tokens > 10
    assert all(c.usage is None for c in chunks[:-1])
    without = list(_chat(client, temperature=0, max_tokens=4, stream=True))
    assert all(c.usage is None for c in without) and without[-1].choices


def test_n_choices_are_generated_one_after_another_each_with_its_seed(client):
    first = _chat(client, n=3, temperature=1.0, seed=11, max_tokens=12)
    again = _chat(client, n=3, temperature=1.0, seed=11, max_tokens=12)
    texts = [c.message.content for c in first.choices]
    assert [c.index for c in first.choices] == [0, 1, 2]
    assert texts == [c.message.content for c in again.choices]  # the seed is honoured
    assert len(set(texts)) > 1  # ...and each choice gets its own
    assert first.usage.completion_tokens == sum(
        _chat(client, temperature=1.0, seed=11 + i, max_tokens=12).usage.completion_tokens for i in range(3)
    )
    streamed = list(_chat(client, n=2, temperature=1.0, seed=11, max_tokens=12, stream=True))
    by_choice = collections.defaultdict(str)
    for chunk in streamed:
        for choice in chunk.choices:
            by_choice[choice.index] += choice.delta.content or ""
    assert [by_choice[0], by_choice[1]] == texts[:2]


def test_seed_reproduces_a_sampled_answer(client):
    prompt = "Write a name for a cat:"
    runs = [client.completions.create(model="smollm2", prompt=prompt, temperature=1.2, seed=s, max_tokens=10)
            for s in (5, 5, 6)]  # fmt: skip
    texts = [r.choices[0].text for r in runs]
    assert texts[0] == texts[1] and texts[0] != texts[2]


def test_chat_logprobs_with_alternatives(client):
    reply = _chat(client, temperature=0, max_tokens=8, logprobs=True, top_logprobs=3)
    entries = reply.choices[0].logprobs.content
    assert len(entries) == reply.usage.completion_tokens
    assert "".join(e.token for e in entries) == reply.choices[0].message.content
    for e in entries:
        assert e.logprob <= 0 and len(e.top_logprobs) == 3
        assert [t.logprob for t in e.top_logprobs] == sorted((t.logprob for t in e.top_logprobs), reverse=True)
        assert e.top_logprobs[0].token == e.token and e.top_logprobs[0].logprob == pytest.approx(e.logprob)
        assert bytes(e.bytes).decode("utf-8", "replace") == e.token
    plain = _chat(client, temperature=0, max_tokens=8)
    assert plain.choices[0].logprobs is None and plain.choices[0].message.content == reply.choices[0].message.content


def test_completion_logprobs_in_the_legacy_shape(client):
    reply = client.completions.create(model="smollm2", prompt="The capital of France is", max_tokens=4,
                                      temperature=0, logprobs=2)  # fmt: skip
    lp = reply.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 4
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(4)]
    assert all(len(alternatives) <= 2 for alternatives in lp.top_logprobs)
    streamed = list(client.completions.create(model="smollm2", prompt="The capital of France is", max_tokens=4,
                                              temperature=0, logprobs=2, stream=True))  # fmt: skip
    assert [t for c in streamed if c.choices[0].logprobs for t in c.choices[0].logprobs.tokens] == lp.tokens


def test_penalties_change_a_repetitive_answer(client):
    def count(**options):
        return client.completions.create(model="smollm2", prompt=COUNTING, max_tokens=16, temperature=0, **options)

    plain = count().choices[0].text
    frequency = count(frequency_penalty=2.0).choices[0].text
    presence = count(presence_penalty=2.0).choices[0].text
    assert frequency != plain and presence != plain
    most = collections.Counter(plain.split()).most_common(1)[0][1]
    assert collections.Counter(frequency.split()).most_common(1)[0][1] < most


def test_stop_sequences_and_top_p_zero(client):
    stopped = client.completions.create(model="smollm2", prompt=COUNTING, max_tokens=16, temperature=0, stop=[" 2"])
    assert " 2" not in stopped.choices[0].text and stopped.choices[0].finish_reason == "stop"
    greedy = client.completions.create(model="smollm2", prompt=COUNTING, max_tokens=8, temperature=0)
    top_p_zero = client.completions.create(model="smollm2", prompt=COUNTING, max_tokens=8, temperature=1.0, top_p=0)
    assert top_p_zero.choices[0].text == greedy.choices[0].text  # top_p 0 keeps only the most likely token


def test_logit_bias_bans_a_token(client):
    paris = _chat(client, temperature=0, max_tokens=8)
    assert "Paris" in paris.choices[0].message.content
    banned = _chat(client, temperature=0, max_tokens=8, logit_bias={"7042": -100, "59": -100})  # " Paris", "Paris"
    assert "Paris" not in banned.choices[0].message.content


def test_content_parts_and_developer_role(client):
    parts = [{"type": "text", "text": "What is the capital of France?"}, {"type": "text", "text": "One word."}]
    reply = _chat(client, temperature=0, max_tokens=8, messages=[
        {"role": "developer", "content": "You answer briefly."}, {"role": "user", "content": parts}])  # fmt: skip
    assert "Paris" in reply.choices[0].message.content
    image = [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]
    with pytest.raises(openai.BadRequestError, match="image_url") as refused:
        _chat(client, messages=[{"role": "user", "content": image}])
    assert refused.value.body["param"] == "messages.0"


def test_a_list_of_prompts_and_echo(client):
    reply = client.completions.create(
        model="smollm2", prompt=["The capital of France is", "The capital of Italy is"], max_tokens=4, temperature=0
    )
    assert [c.index for c in reply.choices] == [0, 1]
    assert "Paris" in reply.choices[0].text and "Rome" in reply.choices[1].text
    single = client.completions.create(model="smollm2", prompt="The capital of France is", max_tokens=4, temperature=0)
    assert reply.usage.prompt_tokens > single.usage.prompt_tokens
    echoed = client.completions.create(model="smollm2", prompt="The capital of France is", max_tokens=4,
                                       temperature=0, echo=True)  # fmt: skip
    assert echoed.choices[0].text == "The capital of France is" + single.choices[0].text


def test_embeddings_base64_and_usage(client, llm_daemon):
    texts = ["a cat", "a kitten sleeps"]
    default = client.embeddings.create(model="smollm2", input=texts)  # the client asks base64 unless told
    floats = client.embeddings.create(model="smollm2", input=texts, encoding_format="float")
    assert np.allclose(default.data[1].embedding, floats.data[1].embedding)
    raw = httpx.post(f"{llm_daemon}/v1/embeddings", timeout=60,
                     json={"model": "smollm2", "input": "a cat", "encoding_format": "base64"}).json()  # fmt: skip
    decoded = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(decoded, floats.data[0].embedding)
    assert floats.usage.prompt_tokens == floats.usage.total_tokens >= 5  # BOS + at least one token per word


def test_models_retrieve_and_unknown_model(client):
    model = client.models.retrieve("smollm2")
    assert model.id == "smollm2" and model.model_extra["variant"] == "gguf-q4_1"
    assert "only variant" in model.model_extra["variant_reason"]
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("gpt-4o")
    with pytest.raises(openai.NotFoundError) as missing_chat:
        _chat(client, model="gpt-4o")
    for error in (missing.value, missing_chat.value):
        assert error.code == "model_not_found" and error.type == "invalid_request_error"
        assert "not installed here" in error.message


def test_unknown_and_unsupported_fields_are_refused_by_name(client):
    with pytest.raises(openai.BadRequestError, match="unknown field 'frobnicate'") as unknown:
        _chat(client, max_tokens=2, extra_body={"frobnicate": 1})
    assert unknown.value.body["param"] == "frobnicate"
    function = {"name": "f", "parameters": {"type": "object"}}
    with pytest.raises(openai.BadRequestError, match="functions is OpenAI's deprecated form of tools") as old:
        _chat(client, max_tokens=2, functions=[function])
    assert old.value.body["param"] == "functions"
    with pytest.raises(openai.BadRequestError, match="tool_choice names function 'g', which is not in tools"):
        _chat(client, max_tokens=2, tools=[{"type": "function", "function": function}],
              tool_choice={"type": "function", "function": {"name": "g"}})  # fmt: skip
    with pytest.raises(openai.BadRequestError, match="needs json_schema exactly when its type is 'json_schema'"):
        _chat(client, max_tokens=2, response_format={"type": "json_schema"})
    with pytest.raises(openai.BadRequestError, match="suffix is not supported"):
        client.completions.create(model="smollm2", prompt="a", suffix="b", max_tokens=2)
    with pytest.raises(openai.BadRequestError, match="dimensions is not supported"):
        client.embeddings.create(model="smollm2", input="a", dimensions=8)
    named = [{"role": "user", "content": "Hi", "name": "ada"}]
    with pytest.raises(openai.BadRequestError, match="name is not supported") as name:
        _chat(client, max_tokens=2, messages=named)
    assert name.value.body["param"] == "messages.0.name"
    with pytest.raises(openai.BadRequestError, match="top_logprobs needs logprobs"):
        _chat(client, max_tokens=2, top_logprobs=2)
    with pytest.raises(openai.BadRequestError, match="n: Input should be less than or equal to 8"):
        _chat(client, max_tokens=2, n=9)


def test_fields_that_do_not_change_the_output_are_accepted(client):
    reply = _chat(client, temperature=0, max_tokens=8, user="u-1", metadata={"team": "edge"}, store=False,
                  service_tier="auto", parallel_tool_calls=False)  # fmt: skip
    assert "Paris" in reply.choices[0].message.content


def test_errors_outside_the_routes_are_in_the_openai_shape(llm_daemon, client):
    bad_json = httpx.post(f"{llm_daemon}/v1/chat/completions", content=b'{"model": "smollm2", "mess',
                          headers={"content-type": "application/json"}, timeout=30)  # fmt: skip
    assert bad_json.status_code == 400 and "not valid JSON" in bad_json.json()["error"]["message"]
    assert bad_json.json()["error"]["type"] == "invalid_request_error"
    empty = httpx.post(f"{llm_daemon}/v1/completions", timeout=30)
    assert empty.status_code == 400 and empty.json()["error"]["message"]
    nowhere = httpx.get(f"{llm_daemon}/v1/nowhere", timeout=30)
    assert nowhere.status_code == 404 and nowhere.json()["error"]["code"] == "not_found"
    wrong_method = httpx.get(f"{llm_daemon}/v1/chat/completions", timeout=30)
    assert wrong_method.status_code == 405 and wrong_method.json()["error"]["code"] == "method_not_allowed"
    assert "Paris" in _chat(client, temperature=0, max_tokens=8).choices[0].message.content  # still serving
