"""`make bench`: the quick set of benchmarks, then one table of every ratio against its goal.

    python benchmarks/bench.py [--only runtime_overhead,cli_startup,...] [--table]

Each benchmark runs as its own process with short settings (fewer rounds than its defaults: medians of a few
rounds on a shared machine are noisy; run a benchmark alone with its defaults to quote a figure). Each writes
benchmarks/results/<name>.json with a `ratios` list; this reads them back and prints one table. `--table` only
prints the table from the results already there.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from _common import RESULTS, load_average

HERE = Path(__file__).parent

# name -> (script, quick arguments, result files it writes)
QUICK: dict[str, tuple[str, list[str], list[str]]] = {
    "runtime_overhead": ("runtime_overhead.py", ["--rounds", "9", "--calls", "200"], ["runtime_overhead"]),
    "cli_startup": ("cli_startup.py", ["--rounds", "9"], ["cli_startup"]),
    "serve_start": ("serve_start.py", ["--rounds", "3"], ["serve_start"]),
    "roofline": ("roofline.py", ["--rounds", "2", "--tokens", "48"], ["roofline"]),
}


def run(names: list[str]) -> list[str]:
    """Run each benchmark; the names of those that failed."""
    failed = []
    for name in names:
        script, quick, _ = QUICK[name]
        print(f"== {name}: {script} {' '.join(quick)}", flush=True)
        start = time.perf_counter()
        code = subprocess.run([sys.executable, str(HERE / script), *quick], cwd=HERE.parent).returncode
        print(f"== {name}: {'ok' if code == 0 else f'FAILED (exit {code})'} in {time.perf_counter() - start:.0f} s")
        if code != 0:
            failed.append(name)
    return failed


def table(names: list[str]) -> bool:
    """Print every ratio of the named benchmarks' results; whether all met their goals."""
    rows = []
    for name in names:
        for result in QUICK[name][2]:
            path = RESULTS / f"{result}.json"
            if not path.is_file():
                rows.append((result, "no results", "", "", "MISSING"))
                continue
            data = json.loads(path.read_text())
            load = data.get("run", {}).get("load_average_1m")
            for r in data.get("ratios", []):
                sign = ">=" if r["higher_is_better"] else "<="
                verdict = "ok" if r["met"] else "MISSED"
                rows.append((r["name"], f"{r['value']:.3f}", f"{sign} {r['goal']:g}", f"{load:.1f}", verdict))
    width = max((len(r[0]) for r in rows), default=10)
    print()
    print(f"{'figure':{width}}  {'ratio':>7}  {'goal':>7}  {'load':>5}  verdict")
    for figure, value, goal, load, verdict in rows:
        print(f"{figure:{width}}  {value:>7}  {goal:>7}  {load:>5}  {verdict}")
    print(f"(load average now {load_average():.1f} on {os.cpu_count()} CPUs; ratios are medians of interleaved runs)")
    return all(r[4] == "ok" for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(QUICK), help=f"comma-separated, of: {', '.join(QUICK)}")
    parser.add_argument("--table", action="store_true", help="Only print the table of the results already there.")
    args = parser.parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in QUICK]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {', '.join(QUICK)}")
    failed = [] if args.table else run(names)
    table(names)
    if failed:
        print(f"failed to run: {', '.join(failed)}")
    sys.exit(1 if failed else 0)  # a missed goal is a finding to read in the table, not a failed run


if __name__ == "__main__":
    main()
