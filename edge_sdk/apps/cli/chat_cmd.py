"""`edge-sdk chat`: a conversation in the terminal with a bundle's language model, or with a running daemon (any
OpenAI-compatible server), the answer streamed as it is generated."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer

from edge_sdk.apps.cli.common import console, err_console, user_errors
from edge_sdk.errors import CloudError, ConfigError, EdgeSDKError, InputError

COMMANDS = "/reset starts over, /exit (or Ctrl-D) ends"


def chat_cmd(
    bundle: Path | None = typer.Argument(None, help="A bundle whose language model answers here, in this process."),
    url: str | None = typer.Option(
        None, "--url", help="Chat with a running daemon instead (or any OpenAI-compatible server): its base URL."
    ),
    model: str | None = typer.Option(None, "--model", help="Model name at --url (default: the first it lists)."),
    variant: str | None = typer.Option(None, "--variant", help="Variant of BUNDLE (default: its first)."),
    system: str | None = typer.Option(None, "--system", help="A system message starting the conversation."),
    temperature: float = typer.Option(0.7, "--temperature", help="0 is greedy (the same answer every time)."),
    max_tokens: int = typer.Option(512, "--max-tokens", help="Longest answer, in tokens."),
    threads: int | None = typer.Option(None, "--threads", help="Engine threads (BUNDLE only)."),
    context: int | None = typer.Option(None, "--context", help="Context in tokens (BUNDLE only; default 2048)."),
    api_key_env: str = typer.Option(
        "EDGE_SDK_API_KEY", "--api-key-env", help="Environment variable holding the bearer key for --url."
    ),
) -> None:
    """Chat with a language model in the terminal; the answer streams as it is generated."""
    with user_errors():
        if (bundle is None) == (url is None):
            raise ConfigError("give a BUNDLE or --url URL (one of them)")
        if max_tokens < 1:
            raise ConfigError(f"--max-tokens must be at least 1, got {max_tokens}")
        if bundle is not None:
            from edge_sdk.api import load

            session: Any = load(bundle, variant, threads=threads, context=context)
            if not hasattr(session, "chat"):
                session.close()
                raise InputError(f"bundle {str(bundle)!r} is not a language model; `edge-sdk run` runs tensor models")
            try:
                _converse(lambda messages: session.chat(messages, temperature=temperature, max_tokens=max_tokens),
                          system)  # fmt: skip
            finally:
                session.close()
        else:
            assert url is not None
            remote = _Remote(url, model, os.environ.get(api_key_env))
            try:
                _converse(lambda messages: remote.stream(messages, temperature, max_tokens), system)
            finally:
                remote.close()


def _converse(answer: Any, system: str | None) -> None:
    """Read lines until /exit or end of input; each answer streams, and joins the conversation."""
    start = [{"role": "system", "content": system}] if system else []
    messages = list(start)
    err_console.print(f"[dim]{COMMANDS}[/]", highlight=False)
    while True:
        try:
            line = input("you> ")
        except EOFError:
            break
        text = line.strip()
        if text in {"/exit", "/quit"}:
            break
        if text == "/reset":
            messages = list(start)
            continue
        if not text:
            continue
        messages.append({"role": "user", "content": text})
        pieces: list[str] = []
        console.print("assistant> ", end="", highlight=False)
        try:
            for piece in answer(messages):
                pieces.append(str(piece))
                console.print(str(piece), end="", highlight=False, markup=False)
        except EdgeSDKError as exc:  # one bad turn does not end the conversation
            console.print()
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, markup=False)
            messages.pop()
            continue
        console.print()
        messages.append({"role": "assistant", "content": "".join(pieces)})


class _Remote:
    """A daemon's /v1/chat/completions, streamed (server-sent events)."""

    def __init__(self, url: str, model: str | None, key: str | None) -> None:
        import httpx

        base = url.rstrip("/")
        base = base[: -len("/v1")] if base.endswith("/v1") else base
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = httpx.Client(base_url=base, headers=headers, timeout=httpx.Timeout(600, connect=10))
        self._model = model or self._first_model(base)

    def _first_model(self, base: str) -> str:
        import httpx

        try:
            reply = self._client.get("/v1/models")
        except httpx.HTTPError as exc:
            raise CloudError(f"cannot reach {base}: {exc}") from None
        models = [m.get("id") for m in reply.json().get("data", [])] if reply.status_code == 200 else []
        if not models:
            raise CloudError(f"{base}/v1/models answered {reply.status_code} with no model; name one with --model")
        return str(models[0])

    def stream(self, messages: list[dict[str, str]], temperature: float, max_tokens: int) -> Iterator[str]:
        import httpx

        body = {"model": self._model, "messages": messages, "temperature": temperature, "max_tokens": max_tokens,
                "stream": True}  # fmt: skip
        try:
            with self._client.stream("POST", "/v1/chat/completions", json=body) as reply:
                if reply.status_code != 200:
                    reply.read()
                    raise CloudError(f"the server answered {reply.status_code}: {_message(reply.text)}")
                for line in reply.iter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    event = json.loads(line[len("data: ") :])
                    if "error" in event:
                        raise CloudError(f"the server stopped: {_message(json.dumps(event))}")
                    for choice in event.get("choices", []):
                        if content := choice.get("delta", {}).get("content"):
                            yield content
        except httpx.HTTPError as exc:
            raise CloudError(f"the connection failed: {exc}") from None

    def close(self) -> None:
        self._client.close()


def _message(text: str) -> str:
    try:
        return str(json.loads(text)["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return text[:300]
