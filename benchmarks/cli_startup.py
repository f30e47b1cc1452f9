"""How long `edge-sdk --help` and `edge-sdk models` take against a bare Typer app with the same commands.

    python benchmarks/cli_startup.py [--rounds 15]

The bare app is generated from edge-sdk's own command tree: every command and sub-command with its options
(names, flags, help text), and bodies that do nothing, in one file that imports only typer. Both run as fresh
processes, alternated (bare, edge-sdk, edge-sdk, bare, ...) so machine noise hits both alike; median wall time
of each, ratio = edge-sdk / bare (goal <= 1.2). The project's bytecode is written first, as an installed edge-sdk
has it (`_common.compile_bytecode` says why). `models` lists an empty install store. Whether `--help`
imports numpy is asserted by tests/apps/cli/test_cli_startup.py, not here.
Writes benchmarks/results/cli_startup.json.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from _common import compile_bytecode, ratio, write_results  # benchmarks/ is on sys.path as a script

GOAL = 1.2


def _type_source(t: Any) -> str:
    """The annotation `t` as source text, for the types the CLI's options use."""
    if t in (Path, int, float, str, bool):
        return str(t.__name__)
    args = typing.get_args(t)
    if typing.get_origin(t) is list:
        return f"list[{_type_source(args[0])}]"
    if args:  # X | None
        return " | ".join("None" if a is type(None) else _type_source(a) for a in args)
    return "str"


# Typer vendors its own click: its objects are told apart by what they have, not by click's classes. Parameters
# keep their types (typer converts a Path through pydantic, a str not: a bare app of strs would be unfairly light).
def _param_source(p: Any, hints: dict[str, Any], index: int) -> str:
    help_text = getattr(p, "help", None) or ""
    kind = _type_source(hints.get(p.name, str))
    if p.param_type_name == "argument":
        return f"{p.name}: {kind} = typer.Argument(None)"
    decls = [*p.opts]
    if p.secondary_opts:
        decls = ["/".join([*p.opts, *p.secondary_opts])]
    flags = ", ".join(map(repr, decls))
    if kind == "bool":
        return f"{p.name}: bool = typer.Option(False, {flags}, help={help_text!r})"
    if kind.startswith("list["):
        return f"{p.name}: {kind} = typer.Option([], {flags}, help={help_text!r})"
    optional = kind if "None" in kind else f"{kind} | None"
    return f"{p.name}: {optional} = typer.Option(None, {flags}, help={help_text!r})"


def _command_source(var: str, name: str, cmd: Any, counter: list[int], decorator: str = "") -> list[str]:
    counter[0] += 1
    fn = f"cmd{counter[0]}"
    hints = typing.get_type_hints(cmd.callback) if cmd.callback is not None else {}
    params = [_param_source(p, hints, i) for i, p in enumerate(cmd.params) if p.name not in ("help",)]
    doc = (cmd.help or "").replace('"""', "'''")
    return [
        decorator or f"@{var}.command({name!r})",
        f"def {fn}({', '.join(params)}) -> None:",
        f'    """{doc}"""',
        "",
    ]


def _group_source(var: str, group: Any, counter: list[int]) -> list[str]:
    lines: list[str] = []
    for name, cmd in group.commands.items():  # a lazy group's commands are built here, once
        if isinstance(getattr(cmd, "commands", None), Mapping):
            counter[0] += 1
            sub = f"group{counter[0]}"
            lines.append(f"{sub} = typer.Typer(help={(cmd.help or '')!r}, no_args_is_help={cmd.no_args_is_help!r})")
            if [p for p in cmd.params if p.name != "help"]:  # a group with options of its own (`models --store`)
                callback = f"@{sub}.callback(invoke_without_command={cmd.invoke_without_command!r})"
                lines += _command_source(sub, name, cmd, counter, decorator=callback)
            lines += _group_source(sub, cmd, counter)
            lines.append(f"{var}.add_typer({sub}, name={name!r})")
        else:
            lines += _command_source(var, name, cmd, counter)
    return lines


def bare_app_source() -> str:
    """A Typer app with edge-sdk's commands, options and help, whose commands do nothing."""
    import typer

    from edge_sdk.apps.cli.main import app

    root: Any = typer.main.get_command(app)
    lines = [
        "from pathlib import Path",
        "",
        "import typer",
        "",
        f"app = typer.Typer(name='edge-sdk', help={(root.help or '')!r}, no_args_is_help=True, add_completion=False)",
        "",
    ]
    lines += _group_source("app", root, [0])
    lines += ["", "if __name__ == '__main__':", "    app()", ""]
    return "\n".join(lines)


def _wall(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def compare(ours: list[str], bare: list[str], rounds: int) -> dict:
    _wall(ours), _wall(bare)  # warm the page cache for both
    a, b = [], []
    for r in range(rounds):
        pair = [(a, ours), (b, bare)] if r % 2 else [(b, bare), (a, ours)]
        for times, cmd in pair:
            times.append(_wall(cmd))
    return {
        "edge_sdk_median_s": statistics.median(a),
        "bare_median_s": statistics.median(b),
        "ratio": statistics.median(a) / statistics.median(b),
        "edge_sdk_s": a,
        "bare_s": b,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    started = time.perf_counter()
    compile_bytecode()
    exe = shutil.which("edge-sdk", path=str(Path(sys.executable).parent)) or ""
    ours_base = [exe] if exe else [sys.executable, "-m", "edge_sdk.cli"]
    with tempfile.TemporaryDirectory(prefix="cli-startup-") as tmp:
        bare = Path(tmp) / "bare_app.py"
        bare.write_text(bare_app_source())
        store = Path(tmp) / "store"
        store.mkdir()
        rows = {
            "--help": compare([*ours_base, "--help"], [sys.executable, str(bare), "--help"], args.rounds),
            "models": compare(
                [*ours_base, "models", "--store", str(store)],
                [sys.executable, str(bare), "models", "--store", str(store)],
                args.rounds,
            ),
        }
    print(f"{'command':10} {'edge-sdk ms':>12} {'bare Typer ms':>14} {'ratio':>6}  (goal <= {GOAL})")
    for name, r in rows.items():
        print(f"{name:10} {r['edge_sdk_median_s'] * 1e3:>12.0f} {r['bare_median_s'] * 1e3:>14.0f} {r['ratio']:>6.2f}")
    ratios = [
        ratio(f"edge-sdk {name} / bare Typer app", r["ratio"], GOAL, higher_is_better=False) for name, r in rows.items()
    ]
    write_results("cli_startup", {"command": ours_base, "rounds": args.rounds, "results": rows, "ratios": ratios},
                  started=started)  # fmt: skip


if __name__ == "__main__":
    main()
