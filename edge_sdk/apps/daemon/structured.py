"""Structured output and tool calls for chat requests: what the model is shown, the grammar that constrains
its answer, and how the answer becomes OpenAI `tool_calls`.

Any model can call tools here, whether or not its chat template knows about them: the tools are described in
the system message and the call is written `<tool_call>[{"name": ..., "arguments": {...}}]</tool_call>` (the
format SmolLM2 was trained on), which a grammar enforces from its first character (`tool_choice` "required" or
a named function) or from the moment the model starts writing it ("auto"). Tool results go back as a user turn
wrapped in `<tool_response>` unless the template has a `tool` role of its own.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from edge_sdk.apps.daemon.openai_schema import ChatMessage, ChatRequest
from edge_sdk.errors import UnsupportedOperationError
from runtimes.base import OutputConstraint, Piece

CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
RESPONSE_OPEN, RESPONSE_CLOSE = "<tool_response>", "</tool_response>"


def grammar_feature(req: ChatRequest) -> str | None:
    """The feature of `req` that needs a grammar engine, named as the user wrote it (None: none does)."""
    if req.calls_tools():
        named = req.named_function()
        return f"tool_choice naming function {named!r}" if named else f"tools with tool_choice {req.choice()!r}"
    if req.response_format is not None and req.response_format.type != "text":
        return f"response_format {req.response_format.type!r}"
    return None


def refuse_without_grammar(model: str, backend: str, session: Any, req: Any) -> None:
    """A 400 naming the engine and the feature when the engine cannot constrain its output."""
    if not isinstance(req, ChatRequest) or not hasattr(session, "chat"):
        return
    feature = grammar_feature(req)
    if feature is not None and not getattr(session, "supports_grammar", False):
        raise UnsupportedOperationError(
            f"model {model!r} runs on {backend}, which has no grammar engine: {feature} needs one "
            "(serve a gguf variant, which runs on llama.cpp)"
        )


def constraint(req: ChatRequest) -> OutputConstraint | None:
    """The grammar `req` asks for: a tool call, a JSON schema, any JSON object, or none."""
    if req.calls_tools():
        return _tool_call_constraint(req)
    fmt = req.response_format
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return OutputConstraint(schema={"type": "object"})
    assert fmt.json_schema is not None  # the schema module requires it for this type
    return OutputConstraint(schema=fmt.json_schema.schema_)


def _tool_call_constraint(req: ChatRequest) -> OutputConstraint:
    named = req.named_function()
    functions = [t.function for t in req.tools or [] if named is None or t.function.name == named]
    calls = [
        {
            "type": "object",
            "properties": {"name": {"const": f.name}, "arguments": f.parameters},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for f in functions
    ]
    schema: dict[str, Any] = {"type": "array", "items": calls[0] if len(calls) == 1 else {"anyOf": calls}}
    schema["minItems"] = 1
    if named is not None or req.parallel_tool_calls is False:
        schema["maxItems"] = 1
    return OutputConstraint(schema=schema, prefix=CALL_OPEN, suffix=CALL_CLOSE, lazy=req.choice() == "auto")


def template_messages(req: ChatRequest, template_has_tool_role: bool = False) -> list[dict[str, str]]:
    """The conversation as a chat template reads it: tools described in the system message, earlier calls and
    their results written in the format the model is asked to use."""
    messages: list[dict[str, str]] = []
    for m in req.messages:
        entry = _as_text(m, template_has_tool_role)
        previous = messages[-1] if messages else None
        if m.role == "tool" and previous is not None and previous.get("tool") == "yes":
            previous["content"] += "\n" + entry["content"]  # results of parallel calls: one turn
            continue
        messages.append({**entry, "tool": "yes"} if m.role == "tool" else entry)
    messages = [{k: v for k, v in m.items() if k != "tool"} for m in messages]
    if req.calls_tools():
        instructions = _tool_instructions(req)
        if messages and messages[0]["role"] == "system":
            messages[0]["content"] = f"{messages[0]['content']}\n\n{instructions}"
        else:
            messages.insert(0, {"role": "system", "content": instructions})
    return messages


def _as_text(m: ChatMessage, template_has_tool_role: bool) -> dict[str, str]:
    text = m.text()
    if m.role == "tool":
        wrapped = f"{RESPONSE_OPEN}\n{text}\n{RESPONSE_CLOSE}"
        return {"role": "tool", "content": text} if template_has_tool_role else {"role": "user", "content": wrapped}
    if m.role == "assistant" and m.tool_calls:
        calls = [{"name": c.function.name, "arguments": _arguments(c.function.arguments)} for c in m.tool_calls]
        text = f"{text}{CALL_OPEN}{json.dumps(calls)}{CALL_CLOSE}"
    return {"role": "system" if m.role == "developer" else m.role, "content": text}


def _arguments(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text  # shown as the caller sent it


def _tool_instructions(req: ChatRequest) -> str:
    tools = [
        {"name": t.function.name, "description": t.function.description or "", "parameters": t.function.parameters}
        for t in req.tools or []
    ]
    named = req.named_function()
    when = (
        f"You must call the function {named}."
        if named is not None
        else "You must call one or more of these tools."
        if req.choice() == "required"
        else "Call a tool when it helps to answer; otherwise answer in plain text."
    )
    return (
        f"You have access to the following tools:\n{json.dumps(tools)}\n{when} "
        f'To call tools, write {CALL_OPEN}[{{"name": "<tool name>", "arguments": {{<arguments as JSON>}}}}]'
        f"{CALL_CLOSE}. Tool results come back between {RESPONSE_OPEN} and {RESPONSE_CLOSE}."
    )


@dataclass
class ToolCallReader:
    """Follows one choice's text: content before a tool call is shown as it comes (held back only while it may
    be the start of `<tool_call>`); the call itself is parsed when the choice ends."""

    _held: str = ""
    _calling: bool = False
    _call_text: list[str] = field(default_factory=list)

    def feed(self, piece: str) -> Piece | None:
        """The part of `piece` to show as content now (None: nothing)."""
        if self._calling:
            self._call_text.append(str(piece))
            return None
        text = self._held + str(piece)
        at = text.find(CALL_OPEN)
        if at >= 0:
            self._calling, self._held = True, ""
            self._call_text.append(text[at:])
            return Piece(text[:at]) if at else None
        keep = max((n for n in range(min(len(CALL_OPEN) - 1, len(text)), 0, -1) if text.endswith(CALL_OPEN[:n])),
                   default=0)  # fmt: skip
        shown, self._held = text[: len(text) - keep], text[len(text) - keep :]
        if not shown:
            return None
        return Piece(shown, getattr(piece, "logprobs", ())) if not self._held and shown == str(piece) else Piece(shown)

    def finish(self) -> tuple[str, list[dict[str, Any]] | None]:
        """Content still held back, and the tool calls (None when there were none, or the call was cut short)."""
        if not self._calling:
            held, self._held = self._held, ""
            return held, None
        text = "".join(self._call_text)
        calls = parse_tool_calls(text)
        return ("", calls) if calls is not None else (text, None)


def parse_tool_calls(text: str) -> list[dict[str, Any]] | None:
    """OpenAI tool calls from `<tool_call>[...]</tool_call>`; None when the text is not a whole call."""
    body = text.strip()
    if not body.startswith(CALL_OPEN) or CALL_CLOSE not in body:
        return None
    inner = body[len(CALL_OPEN) : body.index(CALL_CLOSE)]
    try:
        calls = json.loads(inner)
    except json.JSONDecodeError:
        return None
    if isinstance(calls, dict):
        calls = [calls]
    if not isinstance(calls, list) or not all(isinstance(c, dict) and isinstance(c.get("name"), str) for c in calls):
        return None
    return [
        {
            "id": f"call_{uuid.uuid4().hex[:24]}",
            "type": "function",
            "function": {"name": c["name"], "arguments": json.dumps(c.get("arguments", {}))},
        }
        for c in calls
    ]
