"""OpenAI request bodies, validated once: every field is honoured, refused with a 400 that names it, or (when
it cannot change the output) accepted and ignored as the README lists. Unknown fields are refused too."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from edge_sdk.errors import InputError

DEFAULT_MAX_TOKENS = 256
MAX_CHOICES = 8  # `n`: choices are generated one after another on a device; more would hold the model too long
MAX_STOPS = 4  # as OpenAI
MAX_CHAT_TOP_LOGPROBS = 20  # as OpenAI
MAX_COMPLETION_LOGPROBS = 5  # as OpenAI's legacy completions

# Fields that cannot change the output: accepted, ignored (README, "OpenAI fields").
NO_OP = ("user", "metadata", "store", "parallel_tool_calls", "service_tier", "prompt_cache_key", "safety_identifier")
# Known fields we do not run.
DEPRECATED_FUNCTIONS = "is OpenAI's deprecated form of tools: send tools and tool_choice instead"
REFUSED_CHAT = {
    "functions": DEPRECATED_FUNCTIONS,
    "function_call": DEPRECATED_FUNCTIONS,
    "audio": "is not supported: the daemon's models produce text only",
    "modalities": "is not supported: the daemon's models produce text only",
    "prediction": "is not supported: no predicted-output decoding here",
    "reasoning_effort": "is not supported: the daemon's models do not reason in hidden steps",
    "verbosity": "is not supported by the daemon's models",
    "web_search_options": "is not supported: the device does not search the web",
}
REFUSED_COMPLETION = {
    "suffix": "is not supported: fill-in-the-middle needs a model trained for it",
}


def _no_empty_text(name: str, value: Any) -> None:
    """An empty prompt or input leaves llama.cpp nothing to condition on (it failed with a 500): a 400 instead."""
    if value == "":
        raise ValueError(f"the {name} is empty; give at least one character")
    for i, item in enumerate(value if isinstance(value, list) else []):
        if item == "":
            raise ValueError(f"{name}[{i}] is empty; give at least one character")


def _refuse(reasons: dict[str, str], value: Any, info: ValidationInfo) -> Any:
    if value is None:
        return value
    name = str(info.field_name)
    raise ValueError(f"{name} {reasons[name]}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StreamOptions(_Strict):
    include_usage: bool = False
    include_obfuscation: bool | None = None  # a padding field of OpenAI's own streams: nothing to hide here


class _Generation(_Strict):
    model: str = Field(min_length=1)
    max_tokens: int | None = Field(default=None, gt=0)
    temperature: float = Field(default=0.8, ge=0, le=2)
    top_p: float = Field(default=0.95, ge=0, le=1)
    top_k: int = Field(default=40, ge=0, description="not OpenAI's; llama.cpp's server and Ollama take it")
    n: int = Field(default=1, ge=1, le=MAX_CHOICES)
    seed: int | None = None
    stop: str | list[str] | None = None
    presence_penalty: float = Field(default=0.0, ge=-2, le=2)
    frequency_penalty: float = Field(default=0.0, ge=-2, le=2)
    logit_bias: dict[int, float] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    service_tier: str | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > MAX_STOPS:
            raise ValueError(f"at most {MAX_STOPS} stop sequences, got {len(value)}")
        return value

    @field_validator("logit_bias")
    @classmethod
    def _bias(cls, value: dict[int, float] | None) -> dict[int, float] | None:
        for token, bias in (value or {}).items():
            if not -100 <= bias <= 100:
                raise ValueError(f"the bias of token {token} must be between -100 and 100, got {bias}")
        return value

    @model_validator(mode="after")
    def _stream_options_need_stream(self) -> _Generation:
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed with stream: true")
        return self

    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def token_limit(self) -> int:
        return self.max_tokens or DEFAULT_MAX_TOKENS

    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class TextPart(_Strict):
    type: Literal["text"]
    text: str


FUNCTION_NAME = r"^[a-zA-Z0-9_-]{1,64}$"  # as OpenAI


class FunctionDefinition(_Strict):
    name: str = Field(pattern=FUNCTION_NAME)
    description: str | None = None
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    strict: bool | None = None  # the arguments always follow `parameters` here: a grammar enforces them


class Tool(_Strict):
    type: Literal["function"]
    function: FunctionDefinition


class FunctionName(_Strict):
    name: str = Field(pattern=FUNCTION_NAME)


class NamedToolChoice(_Strict):
    type: Literal["function"]
    function: FunctionName


class FunctionCall(_Strict):
    name: str
    arguments: str


class ToolCall(_Strict):
    id: str
    type: Literal["function"]
    function: FunctionCall


class JsonSchemaFormat(_Strict):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    name: str = Field(pattern=FUNCTION_NAME)
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None  # the answer always follows the schema here: a grammar enforces it


class ResponseFormat(_Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_with_its_type(self) -> ResponseFormat:
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ValueError("response_format needs json_schema exactly when its type is 'json_schema'")
        return self


REFUSED_MESSAGE = {
    "name": "is not supported: the model's chat template has no place for a participant's name",
    "function_call": DEPRECATED_FUNCTIONS,
    "refusal": "is not supported in messages sent to the model",
    "audio": "is not supported: the daemon's models produce text only",
}


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: Any = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    function_call: Any = None
    refusal: Any = None
    audio: Any = None

    @field_validator(*REFUSED_MESSAGE, mode="before")
    @classmethod
    def _refused(cls, value: Any, info: ValidationInfo) -> Any:
        return _refuse(REFUSED_MESSAGE, value, info)

    @model_validator(mode="before")
    @classmethod
    def _known_parts(cls, data: Any) -> Any:
        """A part we cannot read (an image, audio, a file) is named, rather than lost in a union's errors."""
        parts = data.get("content") if isinstance(data, dict) else None
        for i, part in enumerate(parts if isinstance(parts, list) else []):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind != "text":
                raise ValueError(f"content[{i}] is a {kind!r} part; only 'text' parts are supported")
        return data

    @model_validator(mode="after")
    def _fields_of_its_role(self) -> ChatMessage:
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError(f"a {self.role} message needs content (only an assistant's tool call may go without)")
        if self.tool_calls is not None and self.role != "assistant":
            raise ValueError("only assistant messages carry tool_calls")
        if (self.role == "tool") != (self.tool_call_id is not None):
            raise ValueError("tool messages, and only they, carry tool_call_id: the id of the call they answer")
        return self

    def text(self) -> str:
        """Text parts joined by newlines."""
        if self.content is None:
            return ""
        return self.content if isinstance(self.content, str) else "\n".join(p.text for p in self.content)


class ChatRequest(_Generation):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, gt=0)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_CHAT_TOP_LOGPROBS)
    parallel_tool_calls: bool | None = None
    tools: list[Tool] | None = Field(default=None, min_length=1)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    functions: Any = None
    function_call: Any = None
    response_format: ResponseFormat | None = None
    audio: Any = None
    modalities: Any = None
    prediction: Any = None
    reasoning_effort: Any = None
    verbosity: Any = None
    web_search_options: Any = None

    @field_validator(*REFUSED_CHAT, mode="before")
    @classmethod
    def _refused(cls, value: Any, info: ValidationInfo) -> Any:
        return _refuse(REFUSED_CHAT, value, info)

    @model_validator(mode="after")
    def _consistent(self) -> ChatRequest:
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        if None not in (self.max_tokens, self.max_completion_tokens) and self.max_tokens != self.max_completion_tokens:
            raise ValueError("max_tokens and max_completion_tokens differ; send one (max_tokens is the old name)")
        names = [t.function.name for t in self.tools or []]
        if self.tool_choice is not None and not names:
            raise ValueError("tool_choice needs tools")
        if len(set(names)) < len(names):
            raise ValueError(f"tools hold the same function name twice: {names}")
        named = self.named_function()
        if named is not None and named not in names:
            raise ValueError(f"tool_choice names function {named!r}, which is not in tools {names}")
        if self.calls_tools() and self.response_format is not None and self.response_format.type != "text":
            raise ValueError(
                "response_format and tools cannot constrain one answer together; send tool_choice 'none' or drop one"
            )
        return self

    def choice(self) -> str:
        """'none', 'auto' or 'required' ('required' for a named function): OpenAI's default is 'auto' with tools."""
        if isinstance(self.tool_choice, NamedToolChoice):
            return "required"
        return self.tool_choice or ("auto" if self.tools else "none")

    def calls_tools(self) -> bool:
        return bool(self.tools) and self.choice() != "none"

    def named_function(self) -> str | None:
        return self.tool_choice.function.name if isinstance(self.tool_choice, NamedToolChoice) else None

    def token_limit(self) -> int:
        return self.max_completion_tokens or self.max_tokens or DEFAULT_MAX_TOKENS

    def alternatives(self) -> int | None:
        """Alternatives per token to compute (None: no log-probabilities)."""
        return (self.top_logprobs or 0) if self.logprobs else None


class CompletionRequest(_Generation):
    prompt: str | list[str]
    logprobs: int | None = Field(default=None, ge=0, le=MAX_COMPLETION_LOGPROBS)
    echo: bool = False
    best_of: int | None = Field(default=None, ge=1)
    suffix: Any = None

    @field_validator(*REFUSED_COMPLETION, mode="before")
    @classmethod
    def _refused(cls, value: Any, info: ValidationInfo) -> Any:
        return _refuse(REFUSED_COMPLETION, value, info)

    @field_validator("prompt", mode="before")
    @classmethod
    def _text_prompt(cls, value: Any) -> Any:
        if isinstance(value, list) and any(isinstance(v, int | list) for v in value):
            raise ValueError("token-id prompts are not supported; send the prompt as text (or a list of texts)")
        if isinstance(value, list) and not value:
            raise ValueError("the prompt list is empty")
        _no_empty_text("prompt", value)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> CompletionRequest:
        if self.best_of is not None and self.best_of != self.n:
            raise ValueError(f"best_of ({self.best_of}) must equal n ({self.n}): candidates are not ranked here")
        if self.echo and self.logprobs is not None:
            raise ValueError("echo with logprobs would need the prompt's log-probabilities, which are not computed")
        return self

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)

    def alternatives(self) -> int | None:
        return self.logprobs


class EmbeddingRequest(_Strict):
    model: str = Field(min_length=1)
    input: str | list[str]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Any = None
    user: str | None = None

    @field_validator("dimensions", mode="before")
    @classmethod
    def _refused(cls, value: Any, info: ValidationInfo) -> Any:
        return _refuse({"dimensions": "is not supported: the model's embeddings have one size"}, value, info)

    @field_validator("input", mode="before")
    @classmethod
    def _text_input(cls, value: Any) -> Any:
        if isinstance(value, list) and any(isinstance(v, int | list) for v in value):
            raise ValueError("token-id inputs are not supported; send text (or a list of texts)")
        _no_empty_text("input", value)
        return value

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)

    def bounded_texts(self, limit: int) -> list[str]:
        """The texts, at least one and at most `limit` (the daemon's --max-embedding-inputs): a request holds the
        model for as long as its texts take."""
        texts = self.texts()
        if not texts:
            raise InputError("input must hold at least one text")
        if len(texts) > limit:
            raise InputError(
                f"input holds {len(texts)} texts; at most {limit} per request (the daemon's --max-embedding-inputs): "
                "split it"
            )
        return texts
