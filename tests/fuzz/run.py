"""`make fuzz`: 100,000 mutated inputs per reader, each reader in a fresh process so its peak memory is its own.

    python tests/fuzz/run.py [--count 100000] [--seed 18] [--reader archive] [--crashes fuzz-crashes]

Fails (exit 1) on any exception that is not an EdgeSDKError, any input that takes over 5 s, or a reader whose
process peaks over 200 MB. Each finding is written to --crashes as `<reader>-<index>.bin`, to become a
regression test.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HANG_S = 5.0
MAX_RSS_MB = 200.0
READERS = ("manifest", "signature", "archive", "gguf_header", "gguf_source")


def child(name: str, count: int, seed: int, crashes: Path) -> None:
    from fuzzlib import fuzz, readers

    with tempfile.TemporaryDirectory(prefix="edge-fuzz-") as work:
        report = fuzz(readers(Path(work))[name], count=count, seed=seed, hang_s=HANG_S, keep=100)
    for f in report.findings:
        crashes.mkdir(parents=True, exist_ok=True)
        (crashes / f"{name}-{f.index}.bin").write_bytes(f.data)
    result = {
        "reader": name,
        "inputs": report.inputs,
        "refused": report.refused,
        "accepted": report.accepted,
        "slowest_s": round(report.slowest_s, 3),
        "findings": [f"#{f.index} {f.kind}: {f.error}" for f in report.findings],
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    print(json.dumps(result))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--reader", choices=READERS, action="append")
    parser.add_argument("--crashes", type=Path, default=Path("fuzz-crashes"))
    parser.add_argument("--child", choices=READERS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.count, args.seed, args.crashes)
        return 0
    failed = False
    for name in args.reader or READERS:
        start = time.monotonic()
        run = subprocess.run(
            [sys.executable, __file__, "--child", name, "--count", str(args.count), "--seed", str(args.seed),
             "--crashes", str(args.crashes)],
            capture_output=True,
            text=True,
        )  # fmt: skip
        if run.returncode != 0:
            print(f"{name}: the fuzz process failed ({run.returncode}):\n{run.stderr[-3000:]}")
            failed = True
            continue
        r = json.loads(run.stdout.strip().splitlines()[-1])
        problems = list(r["findings"])
        if r["slowest_s"] > HANG_S:
            problems.append(f"slowest input took {r['slowest_s']} s (limit {HANG_S})")
        if r["peak_rss_mb"] > MAX_RSS_MB:
            problems.append(f"peak memory {r['peak_rss_mb']} MB (limit {MAX_RSS_MB})")
        verdict = "FAIL" if problems else "ok"
        print(
            f"{name:12} {verdict:4} {r['inputs']:>7} inputs: {r['refused']} refused, {r['accepted']} accepted; "
            f"slowest {r['slowest_s']} s; peak {r['peak_rss_mb']} MB; {time.monotonic() - start:.0f} s"
        )
        for p in problems[:20]:
            print(f"    {p}")
        failed |= bool(problems)
    if failed:
        print(f"findings saved under {args.crashes}/: turn each into a regression test")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
