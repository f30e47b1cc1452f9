"""Semantic-version precedence, shared by the store (anti-rollback), the registry and sync."""

from __future__ import annotations


def version_key(version: str) -> tuple[tuple[int, ...], int, tuple[tuple[int, int, str], ...]]:
    """Semantic-version precedence: 1.2.0-rc.1 < 1.2.0 < 1.10.0; build metadata (+...) is ignored."""
    core = version.partition("+")[0]
    main, dash, pre = core.partition("-")
    numbers = tuple(int(part) for part in main.split("."))
    if not dash:
        return numbers, 1, ()
    ids = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split("."))
    return numbers, 0, ids
