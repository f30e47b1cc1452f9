"""The kernel's tests pass on a machine with no engine: torch, onnxruntime, executorch, llama_cpp and transformers
are made unimportable in a child pytest that runs tests/kernel.

A device installs the kernel (bundle, signing, store) without the host side; its tests must prove it works there.
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BLOCKED = ("torch", "onnxruntime", "executorch", "llama_cpp", "transformers")
MARK = "blocked by tests/test_kernel_without_engines.py"

# Loaded by `site` at start-up from PYTHONPATH, so it is in force before pytest (or any subprocess a test starts,
# such as the store's SIGKILL children) imports anything. ModuleNotFoundError is what a missing package raises.
SITECUSTOMIZE = f"""
import sys

BLOCKED = {BLOCKED!r}


class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} ({MARK})", name=name)
        return None


sys.meta_path.insert(0, _Block())
"""


def _env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "sitecustomize.py").write_text(SITECUSTOMIZE)
    pythonpath = os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": pythonpath}
    env.pop("PYTEST_ADDOPTS", None)  # the outer run's -k / -x must not narrow the inner one
    return env


def test_the_blocker_blocks(tmp_path):
    probe = "import importlib, sys\nfor n in sys.argv[1:]:\n    try:\n        importlib.import_module(n)\n"
    probe += "    except ModuleNotFoundError as e:\n        print(e)\n    else:\n        print(n, 'IMPORTED')"
    out = subprocess.run(
        [sys.executable, "-c", probe, *BLOCKED],
        env=_env(tmp_path),
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.splitlines()
    assert out == [f"No module named {n!r} ({MARK})" for n in BLOCKED]


def test_kernel_tests_pass_without_any_engine(tmp_path):
    report = tmp_path / "kernel.xml"
    # Own basetemp and no cache: the inner run neither prunes the outer run's temp dirs nor writes to the repo.
    args = ["tests/kernel", "-q", "-p", "no:cacheprovider", f"--basetemp={tmp_path / 'basetemp'}"]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", *args, f"--junitxml={report}"],
        env=_env(tmp_path),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    suite = ET.parse(report).getroot().find("testsuite")
    assert suite is not None
    counts = {k: int(suite.get(k, "0")) for k in ("tests", "errors", "failures", "skipped")}
    assert counts["errors"] == counts["failures"] == 0, counts
    # Nothing may dodge the block by skipping (importorskip, skipif on a missing engine).
    skips = [s.get("message", "") for s in suite.iter("skipped")]
    dodged = [m for m in skips if MARK in m or any(n in m for n in BLOCKED)]
    assert not dodged, dodged
    # Every kernel test module ran something (a module that failed to import would show up as an error).
    ran = {c.get("classname", "").rsplit(".", 1)[-1] for c in suite.iter("testcase") if c.find("skipped") is None}
    modules = {p.stem for p in (REPO / "tests" / "kernel").glob("test_*.py")}
    assert modules <= ran, f"no test ran from {sorted(modules - ran)}"
    assert counts["tests"] - counts["skipped"] >= 40, counts  # tests/kernel had 47 when this was written
