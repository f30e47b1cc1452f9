"""Structured output and tool calls through the official `openai` client against a real daemon on loopback
serving the embedded SmolLM2: answers parse and validate against their schemas (`jsonschema`), whole and
streamed; tool calls come back as `tool_calls` and their results go back in with the `tool` role."""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest

from edge_sdk.errors import UnsupportedOperationError

pytestmark = pytest.mark.slow

CITY = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 40},
        "country": {"type": "string", "enum": ["France", "Germany", "Italy", "Spain"]},
        "population_millions": {"type": "number"},
    },
    "required": ["city", "country", "population_millions"],
    "additionalProperties": False,
}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 40},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The current local time in a time zone.",
        "parameters": {
            "type": "object",
            "properties": {"timezone": {"type": "string", "maxLength": 40}},
            "required": ["timezone"],
            "additionalProperties": False,
        },
    },
}
ASK_WEATHER = [{"role": "user", "content": "What is the weather like in Paris today?"}]


@pytest.fixture(scope="module")
def client(llm_daemon) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{llm_daemon}/v1", api_key="unused", max_retries=0, timeout=300)


def _chat(client, **options):
    options.setdefault("model", "smollm2")
    options.setdefault("temperature", 0)
    return client.chat.completions.create(messages=options.pop("messages", ASK_WEATHER), **options)


def _city_format(strict: bool = True) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "city", "schema": CITY, "strict": strict}}


def test_json_schema_answer_validates_whole_and_streamed(client):
    question = [{"role": "user", "content": "Name the largest city of France, with its country and population."}]
    reply = _chat(client, messages=question, max_tokens=80, response_format=_city_format())
    assert reply.choices[0].finish_reason == "stop"
    answer = json.loads(reply.choices[0].message.content)
    jsonschema.validate(answer, CITY)
    chunks = list(_chat(client, messages=question, max_tokens=80, response_format=_city_format(), stream=True))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert json.loads(streamed) == answer  # the same greedy answer, piece by piece


def test_json_object_answer_is_an_object(client):
    ask = [{"role": "user", "content": "Describe Paris as a JSON object with the keys name and country."}]
    reply = _chat(client, messages=ask, max_tokens=60, response_format={"type": "json_object"})
    assert reply.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(reply.choices[0].message.content), dict)


def test_required_tool_choice_returns_a_call_whose_arguments_validate(client):
    reply = _chat(client, tools=[WEATHER, TIME], tool_choice="required", max_tokens=80)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
    by_name = {t["function"]["name"]: t["function"]["parameters"] for t in (WEATHER, TIME)}
    for call in choice.message.tool_calls:
        assert call.type == "function" and call.id.startswith("call_")
        jsonschema.validate(json.loads(call.function.arguments), by_name[call.function.name])


def test_named_function_is_called_even_when_another_fits_the_question_better(client):
    reply = _chat(client, tools=[WEATHER, TIME], tool_choice={"type": "function", "function": {"name": "get_time"}},
                  max_tokens=60)  # fmt: skip
    calls = reply.choices[0].message.tool_calls
    assert [c.function.name for c in calls] == ["get_time"]
    jsonschema.validate(json.loads(calls[0].function.arguments), TIME["function"]["parameters"])
    assert reply.choices[0].finish_reason == "tool_calls"


def test_streamed_tool_call_matches_the_whole_one(client):
    options = {"tools": [WEATHER], "tool_choice": "required", "max_tokens": 80}
    whole = _chat(client, **options).choices[0].message.tool_calls
    chunks = list(_chat(client, stream=True, **options))
    deltas = [d for c in chunks if c.choices for d in (c.choices[0].delta.tool_calls or [])]
    assert [d.function.name for d in deltas] == [c.function.name for c in whole]
    assert [json.loads(d.function.arguments) for d in deltas] == [json.loads(c.function.arguments) for c in whole]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert not "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)  # no call text as content


def test_tool_result_round_trip(client):
    first = _chat(client, tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "get_weather"}},
                  max_tokens=60).choices[0].message  # fmt: skip
    call = first.tool_calls[0]
    result = {"city": "Paris", "temperature": 31, "unit": "celsius", "sky": "sunny"}
    messages = [
        *ASK_WEATHER,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps(result)},
    ]
    reply = _chat(client, messages=messages, tools=[WEATHER], tool_choice="none", max_tokens=40)
    choice = reply.choices[0]
    assert choice.finish_reason in {"stop", "length"} and choice.message.tool_calls is None
    assert "31" in choice.message.content  # the model read the result it was given
    without = _chat(client, messages=ASK_WEATHER, max_tokens=40).choices[0].message.content
    assert "31" not in without
    with pytest.raises(openai.BadRequestError, match="tool messages, and only they, carry tool_call_id"):
        _chat(client, messages=[*messages[:2], {"role": "tool", "content": "21"}], max_tokens=4)


def test_a_schema_the_grammar_engine_cannot_follow_is_a_400(client):
    bad = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "no-such-type"}}}
    with pytest.raises(openai.BadRequestError, match="JSON schema cannot be turned into a grammar"):
        _chat(client, max_tokens=8, response_format=bad)
    bounded = {"type": "object", "properties": {"age": {"type": "integer", "maximum": 130}}}
    unenforced = {"type": "json_schema", "json_schema": {"name": "x", "schema": bounded}}
    with pytest.raises(openai.BadRequestError, match="cannot enforce: schema.properties.age: maximum"):
        _chat(client, max_tokens=8, response_format=unenforced)
    assert _chat(client, max_tokens=4).choices[0].message.content  # the daemon keeps serving


def test_prompt_cache_shows_in_usage(client):
    system = {"role": "system", "content": "You are a weather assistant for travellers in Europe. " * 20}
    _chat(client, messages=[system, {"role": "user", "content": "Is it sunny in Rome?"}], max_tokens=2)
    again = _chat(client, messages=[system, {"role": "user", "content": "Is it raining in Oslo?"}], max_tokens=2)
    assert again.usage.prompt_tokens_details.cached_tokens > 200  # the system prompt, not evaluated again
    assert again.usage.prompt_tokens_details.cached_tokens < again.usage.prompt_tokens


def test_an_engine_without_a_grammar_refuses_grammar_features_naming_both():
    """Issue 21's ExecuTorch / ONNX Runtime GenAI sessions answer chat but report supports_grammar False."""
    from edge_sdk.apps.daemon.openai_schema import ChatRequest
    from edge_sdk.apps.daemon.structured import refuse_without_grammar
    from runtimes.base import Session

    class NoGrammar(Session):  # the capability flag is what the daemon reads; nothing else is called
        def _run(self, inputs):
            raise NotImplementedError

        def chat(self, messages, **options):
            raise AssertionError("refused before the engine runs")

    session = NoGrammar()
    assert session.supports_grammar is False
    structured = ChatRequest(model="m", messages=ASK_WEATHER, response_format=_city_format())
    with pytest.raises(UnsupportedOperationError, match="model 'm' runs on executorch.*response_format 'json_schema'"):
        refuse_without_grammar("m", "executorch", session, structured)
    tools = ChatRequest(model="m", messages=ASK_WEATHER, tools=[WEATHER], tool_choice="required")
    with pytest.raises(UnsupportedOperationError, match="onnx.*no grammar engine: tools with tool_choice 'required'"):
        refuse_without_grammar("m", "onnx", session, tools)
    refuse_without_grammar("m", "onnx", session, ChatRequest(model="m", messages=ASK_WEATHER))  # plain chat runs
