"""How a choice's text becomes content and tool calls (no model: the text a model could write)."""

from __future__ import annotations

import json

from edge_sdk.apps.daemon.structured import ToolCallReader, parse_tool_calls


def _read(pieces: list[str]) -> tuple[str, list | None]:
    reader = ToolCallReader()
    shown = [str(p) for p in (reader.feed(piece) for piece in pieces) if p is not None]
    rest, calls = reader.finish()
    return "".join(shown) + rest, calls


def test_text_before_a_call_is_content_and_the_call_is_parsed():
    content, calls = _read(["Let me check. <tool", '_call>[{"name": "f", ', '"arguments": {"a": 1}}]</tool_call>'])
    assert content == "Let me check. "
    assert [c["function"]["name"] for c in calls] == ["f"]
    assert json.loads(calls[0]["function"]["arguments"]) == {"a": 1} and calls[0]["id"].startswith("call_")


def test_a_lookalike_of_the_call_tag_is_shown_once_it_cannot_be_one():
    assert _read(["a <to", "y> b"]) == ("a <toy> b", None)
    assert _read(["ends with <tool"]) == ("ends with <tool", None)  # held back, then given at the end


def test_a_call_cut_short_is_not_a_call():
    content, calls = _read(['<tool_call>[{"name": "f", "argu'])
    assert calls is None and content.startswith("<tool_call>")
    assert parse_tool_calls('<tool_call>{"name": "f", "arguments": {}}</tool_call>')[0]["function"]["name"] == "f"
    assert parse_tool_calls("<tool_call>[1, 2]</tool_call>") is None
