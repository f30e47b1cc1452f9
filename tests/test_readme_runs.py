"""Every shell block of README.md runs as written, in order, in one temporary workspace.

What the test changes, and only this: system paths point into the workspace (`/var/lib/edge-sdk`, `/etc/...`,
`/srv/registry`), the daemon's and the gateway's ports are free ones (8080/8090 in the text; `EDGE_SDK_PORT` for a
`serve` without `--port`), `EDGE_SDK_STORE` is the workspace's store and HOME is the workspace's. The files a
reader brings (key files, an input `x.npz`) are written first; `out/digits` is the digits bundle the test
session already built and `out/digits-1.1` the same at version 1.1.0 (the blocks converting them are tagged: they
take minutes). A `serve` / `cloud serve` line
starts the server in the background, waits until it answers `/health/live`, lets the block's next lines talk to
it, and stops it (SIGTERM) at the next server line or the end of the block. A `curl -d` must be answered 2xx.

A block preceded by `<!-- readme-test: skip REASON -->` is not run; it shows as skipped, with its reason, in
pytest's summary.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
TAG = re.compile(r"^<!-- readme-test: skip (?P<reason>.+?) -->$")
BLOCK_TIMEOUT_S = 300


@dataclass(frozen=True)
class Block:
    line: int  # of the opening fence, 1-based
    text: str
    skip: str | None  # the tag's reason


def readme_blocks(text: str) -> list[Block]:
    blocks, lines = [], text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() == "```bash":
            start = i
            i += 1
            body = []
            while lines[i].strip() != "```":
                body.append(lines[i])
                i += 1
            before = next((lines[j].strip() for j in range(start - 1, -1, -1) if lines[j].strip()), "")
            tag = TAG.match(before)
            blocks.append(Block(start + 1, "\n".join(body), tag.group("reason") if tag else None))
        i += 1
    return blocks


BLOCKS = readme_blocks(README.read_text())


def test_the_readme_has_blocks_and_every_tag_says_why():
    assert len(BLOCKS) >= 10
    tags = [line for line in README.read_text().splitlines() if line.startswith("<!-- readme-test")]
    assert len(tags) == sum(b.skip is not None for b in BLOCKS), "a readme-test tag that is not before a bash block"
    assert all(b.skip is None or len(b.skip) > 10 for b in BLOCKS), "a skip tag without a reason"


PRELUDE = r"""
set -eo pipefail
_readme_server=""
_readme_stop() {
  if [ -n "$_readme_server" ]; then
    kill -TERM "$_readme_server" 2>/dev/null || true
    wait "$_readme_server" 2>/dev/null || true
    _readme_server=""
  fi
}
trap _readme_stop EXIT
_readme_port() {  # the --port of a server line, else EDGE_SDK_PORT
  local port="$EDGE_SDK_PORT"
  while [ $# -gt 0 ]; do
    if [ "$1" = "--port" ]; then port="$2"; fi
    shift
  done
  echo "$port"
}
_readme_is_server() {
  case " $* " in *" --help "*|*" --print-config "*) return 1 ;; esac
  [ "$1" = serve ] || { [ "$1" = cloud ] && [ "$2" = serve ]; }
}
edge-sdk() {
  if _readme_is_server "$@"; then
    _readme_stop
    local port
    port=$(_readme_port "$@")
    command edge-sdk "$@" &
    _readme_server=$!
    for _ in $(seq 600); do
      if curl -sf "http://127.0.0.1:$port/health/live" >/dev/null; then return 0; fi
      if ! kill -0 "$_readme_server" 2>/dev/null; then
        wait "$_readme_server"; echo "server exited before answering: edge-sdk $*" >&2; return 1
      fi
      sleep 0.1
    done
    echo "server did not answer within 60 s: edge-sdk $*" >&2
    return 1
  fi
  command edge-sdk "$@"
}
curl() {  # a request that sends a body must be answered 2xx (an illustrative GET may 404)
  case " $* " in *" -d "*) command curl --fail-with-body "$@" ;; *) command curl "$@" ;; esac
}
"""


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Workspace:
    root: Path
    env: dict[str, str]
    replacements: list[tuple[str, str]]

    def script(self, block: Block) -> str:
        text = block.text
        for old, new in self.replacements:
            text = text.replace(old, new)
        return PRELUDE + text + "\n"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, onnx_bundle) -> Workspace:
    from edge_sdk.fsutil import cache_dir

    root = tmp_path_factory.mktemp("readme")
    (root / ".venv").symlink_to(Path(sys.executable).parent.parent)  # `source .venv/bin/activate`
    (root / "examples").symlink_to(ROOT / "examples")
    shutil.copytree(onnx_bundle.root, root / "out" / "digits")
    shutil.copytree(onnx_bundle.root, root / "out" / "digits-1.1")  # the tagged `convert --version 1.1.0`
    manifest = json.loads((root / "out" / "digits-1.1" / "manifest.json").read_text())
    (root / "out" / "digits-1.1" / "manifest.json").write_text(json.dumps({**manifest, "version": "1.1.0"}))
    for name in ("keys.txt", "device.key", "cloud.key", "publisher.key", "upstream.key"):
        (root / name).write_text(f"{name.split('.')[0]}-secret-key\n")
    (root / "devices.txt").write_text("pi-kitchen device-secret-key\n")
    (root / "publishers.txt").write_text("release-ci publisher-secret-key\n")
    np.savez(root / "x.npz", input=np.zeros((1, 1, 8, 8), np.float32))
    (root / "home").mkdir()
    daemon, gateway = _free_port(), _free_port()
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(root / "home"),
        "EDGE_SDK_CACHE": str(cache_dir()),  # the trained digits CNN and downloads stay shared
        "EDGE_SDK_STORE": str(root / "store"),
        "EDGE_SDK_PORT": str(daemon),
        "USER": "readme",
    }
    env.pop("EDGE_SDK_CONFIG", None)
    replacements = [
        ("/var/lib/edge-sdk", str(root / "store")),
        ("/etc/systemd/system/", str(root / "etc" / "systemd") + "/"),
        ("/etc/edge-sdk/", str(root / "etc" / "edge-sdk") + "/"),
        ("/srv/registry", str(root / "registry")),
        ("http://gateway:8090", f"http://127.0.0.1:{gateway}"),
        ("--port 8090", f"--port {gateway}"),
        ("--port 8080", f"--port {daemon}"),
        ("localhost:8080", f"127.0.0.1:{daemon}"),
        ("127.0.0.1:8080", f"127.0.0.1:{daemon}"),
    ]
    (root / "etc" / "systemd").mkdir(parents=True)
    (root / "etc" / "edge-sdk").mkdir(parents=True)
    return Workspace(root, env, replacements)


@pytest.mark.parametrize("block", BLOCKS, ids=[f"README.md:{b.line}" for b in BLOCKS])
def test_readme_block_runs(block: Block, workspace: Workspace):
    if block.skip is not None:
        pytest.skip(f"README.md:{block.line} not run: {block.skip}")
    result = subprocess.run(
        ["bash", "-c", workspace.script(block)],
        cwd=workspace.root,
        env=workspace.env,
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT_S,
    )
    assert result.returncode == 0, (
        f"README.md:{block.line} failed (exit {result.returncode}):\n{block.text}\n"
        f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}"
    )
