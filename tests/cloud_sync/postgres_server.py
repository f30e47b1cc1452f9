"""A real PostgreSQL server for the tests: a throwaway cluster in a temp dir, run as the `postgres` user.

The binaries come from Debian's PostgreSQL (on PATH, or /usr/lib/postgresql/*/bin), installed with apt when
missing and this runs as root; else the PostgreSQL tests skip (under CI=true they fail instead).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def _unavailable(why: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(why)  # CI must run the PostgreSQL tests, never skip them quietly
    pytest.skip(why)


def _ensure_binaries() -> tuple[str, str]:
    if os.geteuid() != 0:
        _unavailable("the PostgreSQL tests run a throwaway cluster as the `postgres` user: run them as root")
    initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
    if initdb is None or pg_ctl is None:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "postgresql"]
        done = subprocess.run(install, capture_output=True, text=True, env=env, timeout=900)
        if done.returncode != 0:  # a fresh machine may have no package lists yet
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env, timeout=900)
            done = subprocess.run(install, capture_output=True, text=True, env=env, timeout=900)
        initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
        if initdb is None or pg_ctl is None:
            _unavailable(f"installing Debian's postgresql failed: {done.stderr[-800:]}")
    assert initdb is not None and pg_ctl is not None
    return initdb, pg_ctl


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """`start()` a cluster on a free loopback port; `database()` gives a fresh database's URL."""

    def __init__(self) -> None:
        self.initdb, self.pg_ctl = _ensure_binaries()
        self.dir = Path(tempfile.mkdtemp(prefix="edge-sdk-pg-"))  # not under pytest's 0700 tmp: postgres reads it
        shutil.chown(self.dir, "postgres", "postgres")
        self.data = self.dir / "data"
        self.port = _free_port()
        self._as_postgres(self.initdb, "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    def _as_postgres(self, *command: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["runuser", "-u", "postgres", "--", *command], capture_output=True, text=True, timeout=120
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command[:2])} failed: {done.stdout[-400:]} {done.stderr[-800:]}")
        return done

    def start(self) -> None:
        # Durability of PostgreSQL itself is not under test here: skip its fsyncs to keep the tests quick.
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
        self._as_postgres(self.pg_ctl, "-D", str(self.data), "-o", options, "-l", str(self.dir / "log"), "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._as_postgres(self.pg_ctl, "-D", str(self.data), "-m", mode, "-w", "stop")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def database(self) -> str:
        """A new, empty database."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def remove(self) -> None:
        with contextlib.suppress(RuntimeError):
            self.stop("immediate")  # thrown away next: no need to wait for clients or a clean checkpoint
        shutil.rmtree(self.dir, ignore_errors=True)
