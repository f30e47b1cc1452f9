"""Debian packages a test needs (sshd for the flash tests, chromium for the page tests), installed when missing.

As root or through password-less sudo, with apt (`.ci/system-packages` does the same before a CI run). Where
that is not possible the test skips, except under CI=true, where a missing tool fails: CI must run these tests,
never skip them quietly.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable

import pytest


def as_root() -> list[str] | None:
    """How to run apt-get: directly as root, through password-less sudo (CI runners), or not at all."""
    if os.geteuid() == 0:
        return []
    if shutil.which("sudo") and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0:
        return ["sudo", "-n", "env", "DEBIAN_FRONTEND=noninteractive"]
    return None


def ensure_package(present: Callable[[], bool], package: str, needed_for: str) -> None:
    """Install Debian's `package` unless `present()`; skip (fail under CI) when it cannot be installed here."""
    if present():
        return
    root = as_root()
    if root is None or not shutil.which("apt-get"):
        why = f"{needed_for}: run `apt-get install {package}` as root"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [*root, "apt-get", "install", "-y", "-q", "--no-install-recommends", package]
    done = subprocess.run(install, capture_output=True, text=True, env=env, timeout=900)
    if done.returncode != 0:  # a fresh machine may have no package lists yet
        subprocess.run([*root, "apt-get", "update", "-q"], capture_output=True, env=env, timeout=900)
        done = subprocess.run(install, capture_output=True, text=True, env=env, timeout=900)
    if not present():
        pytest.fail(f"installing {package} failed: {done.stderr[-800:]}")
