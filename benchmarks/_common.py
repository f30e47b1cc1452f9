"""What every benchmark shares: where results go and what they record about the run, one percentile function,
interleaved timing, a free loopback port and waiting for a server to be ready.

Each result file is `benchmarks/results/<name>.json` holding `run` (machine, CPUs, load average, commit, time)
beside the benchmark's own figures, and `ratios` when it measures something against a goal; `make bench`
(benchmarks/bench.py) reads those to print one table.
"""

from __future__ import annotations

import json
import math
import os
import platform
import socket
import statistics
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("edge_sdk", "converters", "runtimes", "device_profiles", "cloud_sync")  # pyproject's packages.find


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "platform": platform.platform(),
        "processor": _cpu_model(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> float:
    """1-minute load average: on a shared machine, how much the figures can be trusted."""
    return os.getloadavg()[0]


def commit() -> str | None:
    """The commit measured (with '+dirty' when the tree has changes), None outside a git checkout."""
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def run_info(started: float | None = None) -> dict[str, Any]:
    info: dict[str, Any] = {
        "machine": machine(),
        "load_average_1m": load_average(),
        "commit": commit(),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if started is not None:
        info["seconds"] = round(time.perf_counter() - started, 1)
    return info


def ratio(name: str, value: float, goal: float, *, higher_is_better: bool = True, note: str = "") -> dict[str, Any]:
    """One figure held against its goal, as `make bench` prints it (`met` is False when it misses)."""
    met = value >= goal if higher_is_better else value <= goal
    return {"name": name, "value": value, "goal": goal, "higher_is_better": higher_is_better, "met": met, "note": note}


def write_results(name: str, payload: dict[str, Any], *, started: float | None = None) -> Path:
    """benchmarks/results/<name>.json with the run's facts added; prints and returns the path."""
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{name}.json"
    out.write_text(json.dumps({"run": run_info(started), **payload}, indent=2, default=str) + "\n")
    print(f"wrote {out} (load average {load_average():.1f} on {os.cpu_count()} CPUs)")
    return out


def percentile(samples: Iterable[float], q: float) -> float:
    """The q-th percentile (0–100) by linear interpolation between closest ranks (numpy's default "linear"):
    the one definition every benchmark uses, so a p99 of one is comparable with a p99 of another."""
    data = sorted(samples)
    if not data:
        raise ValueError("percentile of no samples")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is not within 0..100")
    pos = (len(data) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def summary(samples: Iterable[float], scale: float = 1.0) -> dict[str, float]:
    """p50/p90/p99, min, max and count of `samples` multiplied by `scale` (1e3: seconds to milliseconds)."""
    data = [s * scale for s in samples]
    return {
        "p50": percentile(data, 50),
        "p90": percentile(data, 90),
        "p99": percentile(data, 99),
        "min": min(data),
        "max": max(data),
        "n": len(data),
    }


def per_call(fn: Callable[[], object], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def interleaved(a: Callable[[], object], b: Callable[[], object], rounds: int, calls: int) -> tuple[float, float]:
    """Median seconds per call of `a` and `b`, alternated round by round so machine noise hits both alike;
    the order within a round flips each round so neither always runs on a warmer cache."""
    a_times, b_times = interleaved_rounds(a, b, rounds, calls)
    return statistics.median(a_times), statistics.median(b_times)


def interleaved_rounds(
    a: Callable[[], object], b: Callable[[], object], rounds: int, calls: int
) -> tuple[list[float], list[float]]:
    """Seconds per call of `a` and `b` in each round, alternated as `interleaved` does."""
    a_times: list[float] = []
    b_times: list[float] = []
    for r in range(rounds):
        if r % 2:
            b_times.append(per_call(b, calls))
            a_times.append(per_call(a, calls))
        else:
            a_times.append(per_call(a, calls))
            b_times.append(per_call(b, calls))
    return a_times, b_times


def compile_bytecode() -> None:
    """Write the project's bytecode (__pycache__), as `pip install` does for a wheel's modules at install time.

    A start-time benchmark compares our processes with engines installed from wheels, whose modules Python reads
    compiled. This checkout is installed in place (`pip install -e`), which writes no bytecode, and where
    PYTHONDONTWRITEBYTECODE is set (as on the project's CI machines) Python never writes it either: every process
    would compile our modules from source again (~40-80 ms of a daemon's start), a cost no installed device pays."""
    import compileall

    for package in PACKAGES:
        if not compileall.compile_dir(REPO / package, quiet=1):
            raise RuntimeError(f"compiling {package} failed: a syntax error in the checkout?")


def free_port() -> int:
    """A loopback TCP port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(
    url: str,
    path: str = "/health/ready",
    *,
    timeout_s: float = 120.0,
    headers: dict[str, str] | None = None,
    process: subprocess.Popen[Any] | None = None,
    interval_s: float = 0.02,
) -> float:
    """Poll `url + path` until it answers 200; the seconds waited. Fails early when `process` (the server) exits."""
    import httpx

    start = time.perf_counter()
    deadline = start + timeout_s
    while time.perf_counter() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode} before {path} answered 200")
        try:
            if httpx.get(url + path, headers=headers, timeout=2).status_code == 200:
                return time.perf_counter() - start
        except httpx.HTTPError:
            pass
        time.sleep(interval_s)
    raise TimeoutError(f"{url}{path} did not answer 200 within {timeout_s:g} s")


def overhead_row(engine: str, variant: str, batch: int, rounds: int, calls: int, sdk: float, raw: float) -> dict:
    return {
        "engine": engine,
        "variant": variant,
        "batch": batch,
        "rounds": rounds,
        "calls_per_round": calls,
        "sdk_median_us": sdk * 1e6,
        "direct_median_us": raw * 1e6,
        "ratio_direct_over_sdk": raw / sdk,
    }
