"""Store tests' helpers: the CLI run in-process, and one bundle at several manifest versions."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from typer.testing import CliRunner


def invoke(*args: str):
    """`edge-sdk ARGS...` in this process; the result's exit_code and output are what a user would see."""
    from edge_sdk.apps.cli.main import app

    return CliRunner().invoke(app, list(args))


def versioned(bundle_root: Path, version: str, dest: Path) -> Path:
    """The same bundle files at another manifest version (unsigned bundles: the digests still hold)."""
    out = dest / version
    shutil.copytree(bundle_root, out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["version"] = version
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out
