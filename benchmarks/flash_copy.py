"""Copy speed of `edge-sdk flash` over SSH vs paramiko's own SFTP put and OpenSSH's scp, on loopback.

    python benchmarks/flash_copy.py [--mb 64] [--rounds 3]

A loopback OpenSSH server plays the board (needs /usr/sbin/sshd). Each round copies the same random file
three ways, alternated so machine noise hits all alike: our transport (chunks, progress callback, resume
offset), `SFTPClient.put` on its own connection (setup left out of both), and the `scp` command (a new
process: its connection setup is in its time, as when a user runs it).
Prints median MB/s and the ratios; writes benchmarks/results/flash_copy.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import paramiko
from _common import write_results  # benchmarks/ is on sys.path as a script

from edge_sdk.apps.flash import parse_target
from edge_sdk.apps.flash.loopback import start_sshd
from edge_sdk.apps.flash.ssh import SSHTransport


def _timed(fn) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="flash-bench-") as tmp:
        work = Path(tmp)
        server = start_sshd(work / "sshd")
        try:
            source = work / "payload.bin"
            source.write_bytes(os.urandom(args.mb * 1024 * 1024))
            dest = work / "board"
            dest.mkdir()
            target = parse_target(server.url(dest))
            ours = SSHTransport(target, identity=server.identity, known_hosts=server.known_hosts)
            client = paramiko.SSHClient()
            client.load_host_keys(str(server.known_hosts))
            client.connect("127.0.0.1", server.port, username=server.user, key_filename=str(server.identity))
            sftp = client.open_sftp()
            scp = [
                "scp", "-q", "-i", str(server.identity), "-P", str(server.port),
                "-o", f"UserKnownHostsFile={server.known_hosts}", "-o", "BatchMode=yes",
                str(source), f"{server.user}@127.0.0.1:{dest / 'scp.bin'}",
            ]  # fmt: skip
            ways = {
                "edge-sdk flash (SSHTransport.send)": lambda: ours.send(
                    source, str(dest / "ours.bin"), 0, lambda n: None
                ),
                "paramiko SFTPClient.put": lambda: sftp.put(str(source), str(dest / "put.bin")),
                "OpenSSH scp (with its connect)": lambda: subprocess.run(scp, check=True),
            }
            times: dict[str, list[float]] = {name: [] for name in ways}
            for _ in range(args.rounds):
                for name, fn in ways.items():
                    times[name].append(_timed(fn))
            for name in ("ours.bin", "put.bin", "scp.bin"):
                assert (dest / name).stat().st_size == source.stat().st_size, name
            ours.close()
            client.close()
        finally:
            server.stop()

    medians = {name: statistics.median(t) for name, t in times.items()}
    mb_s = {name: args.mb / m for name, m in medians.items()}
    sdk = mb_s["edge-sdk flash (SSHTransport.send)"]
    rows = [
        {"way": name, "median_s": medians[name], "mb_per_s": rate, "ratio_over_sdk": rate / sdk}
        for name, rate in mb_s.items()
    ]
    print(f"copying {args.mb} MB over SSH on loopback, {args.rounds} rounds, medians")
    for row in rows:
        print(f"  {row['way']:<36} {row['mb_per_s']:8.1f} MB/s   {row['ratio_over_sdk']:.2f}x ours")
    payload = {"paramiko": paramiko.__version__, "mb": args.mb, "rounds": args.rounds, "results": rows}
    write_results("flash_copy", payload)


if __name__ == "__main__":
    main()
