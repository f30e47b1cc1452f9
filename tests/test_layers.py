"""The layer contract of DESIGN.md holds, and it would catch an upward import or a cycle."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("edge_sdk", "converters", "runtimes", "device_profiles", "cloud_sync")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.skipif(not LINT_IMPORTS.exists(), reason="import-linter is a dev dependency")


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo"], cwd=tree, env=env, capture_output=True, text=True, timeout=120
    )


def _copy_of_the_tree(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tree / package, ignore=shutil.ignore_patterns("__pycache__", "data"))
    shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")
    return tree


def test_the_tree_keeps_its_layers():
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_an_upward_import_breaks_the_contract(tmp_path):
    tree = _copy_of_the_tree(tmp_path)
    profile_schema = tree / "device_profiles" / "schema.py"
    profile_schema.write_text(profile_schema.read_text() + "\nimport edge_sdk.apps.daemon.pool  # noqa\n")
    result = _lint(tree)
    assert result.returncode != 0
    assert "device_profiles.schema -> edge_sdk.apps.daemon.pool" in result.stdout


def test_a_cycle_between_siblings_breaks_the_contract(tmp_path):
    tree = _copy_of_the_tree(tmp_path)
    transport = tree / "edge_sdk" / "apps" / "flash" / "transport.py"
    transport.write_text(transport.read_text() + "\nfrom edge_sdk.apps.flash import connect  # noqa\n")
    result = _lint(tree)
    assert result.returncode != 0
    assert "no import cycles" in result.stdout and "BROKEN" in result.stdout
