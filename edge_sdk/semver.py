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


def build_metadata_refusal(version: str) -> str | None:
    """Why `version` cannot be installed or published, or None.

    Build metadata (`1.0.0+abc`) has the same precedence as `1.0.0`, so neither anti-rollback nor "same
    version, other bytes" could tell the two apart: a device would hold both side by side. We refuse it.
    """
    core, plus, build = version.partition("+")
    if not plus:
        return None
    return (
        f"version {version!r} carries build metadata ('+{build}'), which semantic versioning orders equal to "
        f"{core!r}: anti-rollback could not tell them apart. Give each build its own version without '+' "
        f"(e.g. '{_next_patch(core)}')"
    )


def _next_patch(core: str) -> str:
    main, dash, _pre = core.partition("-")
    parts = main.split(".")
    if dash or len(parts) != 3 or not parts[2].isdigit():
        return core
    return f"{parts[0]}.{parts[1]}.{int(parts[2]) + 1}"
