"""Find and validate device profiles: a shipped id, 'host', or the path of a user's YAML file."""

from __future__ import annotations

import difflib
from functools import cache
from pathlib import Path

from pydantic import ValidationError

from device_profiles.schema import DeviceProfile
from edge_sdk.errors import ProfileError, choices

DATA_DIR = Path(__file__).parent / "data"
HOST_ID = "host"


def profile_ids() -> list[str]:
    """Every profile id that can be named without a path, 'host' included."""
    return sorted([p.stem for p in DATA_DIR.glob("*.yaml")] + [HOST_ID])


def load_profile(ref: str | Path | DeviceProfile) -> DeviceProfile:
    """Resolve a profile id ('rpi5', 'host') or a YAML path to a validated DeviceProfile."""
    if isinstance(ref, DeviceProfile):
        return ref
    text = str(ref)
    if text == HOST_ID:
        from device_profiles.host import detect_host

        return detect_host()
    path = Path(text)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return load_profile_file(path)
    return _shipped(text)


@cache
def _shipped(profile_id: str) -> DeviceProfile:
    path = DATA_DIR / f"{profile_id}.yaml"
    if not path.is_file():
        known = profile_ids()
        near = difflib.get_close_matches(profile_id, known, n=1)
        hint = f" Did you mean {near[0]!r}?" if near else ""
        raise ProfileError(
            f"unknown device profile {profile_id!r}.{hint} Valid: {choices(known)}, or the path of a YAML file"
        )
    return load_profile_file(path)


def load_profile_file(path: Path) -> DeviceProfile:
    import yaml  # here, not at the top: the daemon's default profile ('host') reads no YAML, and starts 10 ms sooner

    if not path.is_file():
        raise ProfileError(f"device profile file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ProfileError(f"device profile {str(path)!r} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ProfileError(f"device profile {str(path)!r} must be a YAML mapping, got {type(data).__name__}")
    try:
        return DeviceProfile.model_validate(data)
    except ValidationError as exc:
        raise ProfileError(f"device profile {str(path)!r} is invalid:\n{_explain(exc)}") from None


def _explain(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            lines.append(f"  {where}: unknown field (check the spelling; see device_profiles/data/rpi5.yaml)")
        else:
            lines.append(f"  {where}: {err['msg']}")
    return "\n".join(lines)


def all_profiles() -> list[DeviceProfile]:
    return [load_profile(pid) for pid in profile_ids()]
