"""`--log-level` and `--log-format json`: one JSON object a line, with the event's fields, from a real daemon."""

from __future__ import annotations

import json
import logging
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from edge_sdk.apps.daemon.logs import JsonFormatter, configure_logging


@pytest.fixture
def restored_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:], root.level = handlers, level


def test_a_json_line_carries_time_level_logger_message_and_the_event_fields():
    record = logging.LogRecord("edge_sdk.route", logging.WARNING, __file__, 1, "route=%s", ("cloud",), None)
    record.__dict__.update({"event": "route", "route": "cloud", "status": 200})
    line = json.loads(JsonFormatter().format(record))
    assert line["level"] == "warning" and line["logger"] == "edge_sdk.route" and line["message"] == "route=cloud"
    assert (line["event"], line["route"], line["status"]) == ("route", "cloud", 200)
    assert line["time"].endswith("+00:00")  # UTC, ISO 8601
    assert "args" not in line and "msg" not in line  # LogRecord's own attributes stay out


def test_the_level_filters_and_the_format_applies_to_every_logger(restored_logging, capsys):
    configure_logging("warning", "json")
    logging.getLogger("edge_sdk.route").info("hidden", extra={"event": "route"})
    logging.getLogger("uvicorn.error").warning("shown %d", 1)
    (line,) = capsys.readouterr().err.splitlines()
    assert json.loads(line) == {**json.loads(line), "logger": "uvicorn.error", "message": "shown 1", "level": "warning"}
    configure_logging("info", "text")
    logging.getLogger("edge_sdk.route").info("plain")
    assert capsys.readouterr().err == "INFO:     edge_sdk.route: plain\n"


def test_a_bad_log_option_is_refused_naming_the_valid_values(onnx_bundle):
    from typer.testing import CliRunner

    from edge_sdk.apps.cli.main import app

    result = CliRunner().invoke(app, ["serve", str(onnx_bundle.root), "--log-format", "xml"])
    assert result.exit_code == 1 and "log_format: Input should be 'text' or 'json'" in result.output
    result = CliRunner().invoke(app, ["serve", str(onnx_bundle.root), "--log-level", "loud"])
    assert result.exit_code == 1 and "log_level: Input should be 'debug', 'info', 'warning' or 'error'" in result.output


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_logs_json_lines_for_route_decisions_and_failed_cloud_calls(onnx_bundle, tmp_path):
    """A request for a model the device does not hold goes to the cloud, which is down: the daemon logs each
    failed cloud attempt and the route decision, every line a JSON object."""
    port, dead = _free_port(), _free_port()
    cmd = [
        sys.executable, "-m", "edge_sdk.cli", "serve", str(onnx_bundle.root), "--port", str(port),
        "--cloud-url", f"http://127.0.0.1:{dead}", "--cloud-retries", "1", "--no-queue",
        "--log-format", "json", "--log-level", "info",
    ]  # fmt: skip
    daemon = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert daemon.poll() is None and time.monotonic() < deadline, "the daemon did not start"
            try:
                if httpx.get(f"{url}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        chat = {"model": "not-here", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
        reply = httpx.post(f"{url}/v1/chat/completions", json=chat, timeout=30)
        assert reply.status_code >= 500 and reply.headers["x-edge-route"] == "cloud", reply.text
    finally:
        daemon.send_signal(signal.SIGINT)
        try:
            _, err = daemon.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            _, err = daemon.communicate()
    lines = [line for line in err.splitlines() if line.startswith("{")]
    parsed = [json.loads(line) for line in lines]
    assert len(parsed) >= 3 and all({"time", "level", "logger", "message"} <= set(p) for p in parsed)
    attempts = [p for p in parsed if p.get("event") == "cloud_attempt"]
    assert [a["attempt"] for a in attempts] == [1, 2] and attempts[-1]["outcome"] == "gave_up"
    assert all(a["level"] == "warning" and "ConnectError" in a["error"] for a in attempts)
    (route,) = [p for p in parsed if p.get("event") == "route"]
    assert route["route"] == "cloud" and route["model"] == "not-here" and route["status"] == reply.status_code
    assert any(p["logger"].startswith("uvicorn") for p in parsed)  # uvicorn's own lines in the same format
    # The banner before logging starts is the one plain line: everything the daemon logs is JSON.
    assert [line for line in err.splitlines() if not line.startswith("{")] == [
        line for line in err.splitlines() if line.startswith("serving ")
    ]
