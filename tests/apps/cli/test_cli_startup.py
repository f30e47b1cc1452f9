"""The CLI starts light: printing help or listing a store imports no numerical or engine library.

On a Raspberry Pi importing numpy alone takes about a second; `edge-sdk --help` must not pay for it. Each case runs
the real entry point in a fresh interpreter and reports which heavy modules were imported by the time it exits.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
HEAVY = ("numpy", "torch", "onnxruntime", "executorch", "llama_cpp", "transformers", "fastapi", "uvicorn")


def _imported_after(args: list[str]) -> set[str]:
    code = (
        "import json, sys\n"
        "args = json.loads(sys.argv[1])\n"
        "from edge_sdk.apps.cli.main import main\n"
        "sys.argv = ['edge-sdk', *args]\n"
        "try:\n"
        "    main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "sys.stderr.write('\\nMODULES ' + json.dumps(sorted({m.split('.')[0] for m in sys.modules})) + '\\n')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(Path.home()), "COLUMNS": "120"},
        timeout=120,
    )
    line = next(x for x in done.stderr.splitlines() if x.startswith("MODULES "))
    assert "Usage" in done.stdout or "models" in done.stdout, done.stdout + done.stderr
    return set(json.loads(line[len("MODULES ") :]))


@pytest.mark.parametrize(
    "args",
    [["--help"], ["serve", "--help"], ["convert", "--help"], ["models", "--help"]],
    ids=" ".join,
)
def test_help_imports_no_numpy_or_engine(args):
    heavy = sorted(set(HEAVY) & _imported_after(args))
    assert heavy == [], f"`edge-sdk {' '.join(args)}` imported {heavy}"


def test_root_help_reads_no_manifest_models():
    # The bundle manifests are pydantic models: printing the command list must not build them.
    assert "pydantic" not in _imported_after(["--help"])


def test_models_lists_a_store_without_numpy(tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    modules = _imported_after(["models", "--store", str(store)])
    assert sorted(set(HEAVY) & modules) == []
    assert "rich" not in modules  # a one-line answer needs no rich console (a table of models does)


def test_the_command_list_is_the_commands_own_help():
    # `edge-sdk --help` lists the commands from listing.json without importing them; it must say what the
    # commands themselves say. After changing a command's first help paragraph: EDGE_SDK_UPDATE_SURFACE=1.
    import typer

    from edge_sdk.apps.cli.lazy import LISTING, listing_of
    from edge_sdk.apps.cli.main import app

    root = typer.main.get_command(app)
    actual = listing_of(root, typer.Context(root))
    if os.environ.get("EDGE_SDK_UPDATE_SURFACE") == "1":
        LISTING.write_text(json.dumps(actual, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    assert json.loads(LISTING.read_text(encoding="utf-8")) == actual, (
        f"{LISTING.name} is stale: run with EDGE_SDK_UPDATE_SURFACE=1"
    )


def test_a_command_registered_the_usual_way_beside_the_lazy_ones_is_kept():
    import typer
    from typer.testing import CliRunner

    from edge_sdk.apps.cli.lazy import Entry, LazyGroup

    class Group(LazyGroup):
        entries = (Entry("pack", "edge_sdk.apps.cli.bundle_cmds:pack_cmd"),)

    app = typer.Typer(cls=Group)
    app.callback()(lambda: None)  # a group, as edge-sdk's root is

    @app.command("hello")
    def hello() -> None:
        """Say hello."""
        typer.echo("hello")

    runner = CliRunner()
    listed = runner.invoke(app, ["--help"], env={"COLUMNS": "120"}).output
    assert "pack" in listed and "hello" in listed
    assert runner.invoke(app, ["hello"]).output == "hello\n"
    assert "Usage" in runner.invoke(app, ["pack", "--help"]).output
