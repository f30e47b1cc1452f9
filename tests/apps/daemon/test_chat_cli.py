"""`edge-sdk chat`: a terminal conversation with a bundle in this process, and with a daemon over --url."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from edge_sdk.apps.cli.main import app

pytestmark = pytest.mark.slow

runner = CliRunner()
TURNS = "What is the capital of France? Answer in one word.\n/reset\n\nAnd of Italy? Answer in one word.\n/exit\n"


def _answers(output: str) -> list[str]:
    return [line.split("assistant> ", 1)[1] for line in output.splitlines() if "assistant> " in line]


def test_chat_with_a_bundle_here_and_with_a_daemon_gives_the_same_streamed_answers(llm_daemon, smollm2_served_bundle):
    options = ["--temperature", "0", "--max-tokens", "8"]
    local = runner.invoke(app, ["chat", str(smollm2_served_bundle.root), "--threads", "2", *options], input=TURNS)
    assert local.exit_code == 0, local.output
    answers = _answers(local.output)
    assert len(answers) == 2 and "Paris" in answers[0]  # the empty line asked nothing; /exit ended it
    remote = runner.invoke(app, ["chat", "--url", f"{llm_daemon}/v1", "--model", "smollm2", *options], input=TURNS)
    assert remote.exit_code == 0, remote.output
    assert _answers(remote.output) == answers


def test_chat_errors_are_one_line(llm_daemon, smollm2_served_bundle):
    both = runner.invoke(app, ["chat", str(smollm2_served_bundle.root), "--url", llm_daemon])
    assert both.exit_code == 1 and "give a BUNDLE or --url URL" in both.output
    unknown = runner.invoke(app, ["chat", "--url", llm_daemon, "--model", "gpt-4o"], input="Hi\n/exit\n")
    assert unknown.exit_code == 0 and "the server answered 404" in unknown.output  # the conversation goes on
    gone = runner.invoke(app, ["chat", "--url", "http://127.0.0.1:9"])
    assert gone.exit_code == 1 and "cannot reach" in gone.output
