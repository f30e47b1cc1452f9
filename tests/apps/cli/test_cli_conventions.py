"""What every command shares: clean help, one meaning per short option, shell completion, readable reprs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import typer
from typer.testing import CliRunner

from edge_sdk.apps.cli.main import app


def _commands(group, path=()):
    yield path, group
    for name, sub in sorted(getattr(group, "commands", {}).items()):
        yield from _commands(sub, (*path, name))


def test_help_shows_conventional_placeholders_and_whole_sentences():
    runner = CliRunner()
    for path, command in _commands(typer.main.get_command(app)):
        text = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "120", "TERM": "dumb"}).output
        leaks = re.findall(r"<(?:bool|str|int|float|path|list\[\w+\])>", text)
        leaks += re.findall(r"Usage:.*?(\{\w+\})", text)  # typer's {bundle} for a required argument
        assert not leaks, f"{' '.join(path)} --help shows {leaks}"
        # A help paragraph is one line in the source, so the terminal wraps it at its own width.
        assert "\n" not in (command.help or "").replace("\n\n", ""), f"{' '.join(path)}: a paragraph is broken"


def test_a_short_option_means_one_thing_in_every_command():
    meanings: dict[str, set[str]] = defaultdict(set)
    for _, command in _commands(typer.main.get_command(app)):
        for param in getattr(command, "params", []):
            for short in (o for o in param.opts if re.fullmatch(r"-\w", o)):
                meanings[short].add(max(param.opts, key=len))
    clashes = {short: sorted(longs) for short, longs in meanings.items() if len(longs) > 1}
    assert not clashes
    assert "-v" not in meanings  # -v reads as --verbose or --version to most users, never as --variant


def test_shell_completion_offers_commands_and_profile_ids():
    def complete(words: str) -> list[str]:
        env = {**os.environ, "_EDGE_SDK_COMPLETE": "complete_bash", "COMP_WORDS": words}
        env["COMP_CWORD"] = str(len(words.split()) - (0 if words.endswith(" ") else 1))
        done = subprocess.run(
            [sys.executable, "-m", "edge_sdk.cli"], env=env, capture_output=True, text=True, timeout=60, check=True
        )
        return done.stdout.split()

    assert complete("edge-sdk pro") == ["profiles"]
    assert complete("edge-sdk profiles show rp") == ["rpi4", "rpi5"]
    assert "jetson-orin-nano" in complete("edge-sdk fit b.edgebundle -p j")
    # a process of its own: typer's shell detection keeps state that other in-process CLI tests disturb
    script = subprocess.run(
        [sys.executable, "-m", "edge_sdk.cli", "--show-completion", "bash"],
        env={**os.environ, "SHELL": "/bin/bash"}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "_EDGE_SDK_COMPLETE" in script.stdout


def test_bundles_variants_reports_and_sessions_have_readable_reprs(onnx_bundle):
    import edge_sdk

    text = repr(onnx_bundle)
    assert text.startswith("<Bundle digits-cnn 1.0.0 (tensor) at ") and "onnx-int8-static" in text
    variant = onnx_bundle.variant("onnx-int8-static")
    expected = r"Variant\('onnx-int8-static', onnx, int8-static, [\d.]+ MiB, gate passed, rpi5: fits, rpi4: fits\)"
    assert re.fullmatch(expected, repr(variant))
    assert re.fullmatch(r"FitReport\(rpi4: fits, peak [\d.]+ MiB of [\d.]+ MiB\)", repr(variant.fit["rpi4"]))
    assert repr(variant.accuracy).startswith("AccuracyReport(passed, ") and "accuracy=0.9" in repr(variant.accuracy)
    with edge_sdk.load(onnx_bundle, "onnx-int8-static") as session:
        shown = repr(session)
    assert shown.startswith("<OnnxSession variant 'onnx-int8-static': input: float32[batchx1x8x8]"), shown


def test_every_package_ships_py_typed():
    from importlib.resources import files

    for package in ("edge_sdk", "converters", "runtimes", "device_profiles", "cloud_sync"):
        assert files(package).joinpath("py.typed").is_file(), package
    pyproject = (Path(__file__).parents[3] / "pyproject.toml").read_text()
    assert pyproject.count('"py.typed"') == 5  # in the wheel too, not only in the source tree
