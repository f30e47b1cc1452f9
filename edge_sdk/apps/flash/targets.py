"""Where a bundle goes: `ssh://user@host[:port]/store/path` or `dir:///mounted/card/store`, with a profile.

A targets file holds one target a line: `URL [PROFILE]`, where PROFILE is a profile id or a YAML path used
for the fit check; blank lines and `#` comments are ignored.
"""

from __future__ import annotations

import enum
import posixpath
import shlex
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from edge_sdk.errors import ConfigError, choices

FORMS = "ssh://user@host[:port]/store/path or dir:///absolute/store/path"


class Scheme(enum.StrEnum):
    SSH = "ssh"
    DIR = "dir"


@dataclass(frozen=True)
class Target:
    scheme: Scheme
    store: str  # absolute POSIX path of the store on the device (or on the mounted card)
    host: str | None = None
    port: int = 22
    user: str | None = None
    profile: str | None = None

    @property
    def label(self) -> str:
        if self.scheme is Scheme.DIR:
            return f"dir://{self.store}"
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port != 22 else ""
        return f"ssh://{user}{self.host}{port}{self.store}"

    @property
    def incoming(self) -> str:
        """Where uploads wait on the device; beside the store's own directories, which it never touches."""
        return posixpath.join(self.store, ".incoming")


def parse_target(url: str, profile: str | None = None) -> Target:
    """Parse one target URL, or raise a ConfigError naming what is wrong and the accepted forms."""
    parts = urlsplit(url.strip())
    try:
        scheme = Scheme(parts.scheme)
    except ValueError:
        raise ConfigError(
            f"target {url!r} has scheme {parts.scheme or 'none'!r}; valid: {choices(s.value for s in Scheme)} ({FORMS})"
        ) from None
    path = unquote(parts.path)
    if not path.startswith("/") or path.rstrip("/") == "":
        raise ConfigError(f"target {url!r} names no absolute store path; write {FORMS}")
    if parts.query or parts.fragment:
        raise ConfigError(f"target {url!r} has a query or fragment; write {FORMS}")
    store = posixpath.normpath(path)
    if scheme is Scheme.DIR:
        if parts.netloc:
            raise ConfigError(
                f"target {url!r}: a dir:// target has no host; write dir:///absolute/path (three slashes)"
            )
        return Target(Scheme.DIR, store, profile=profile)
    if not parts.hostname:
        raise ConfigError(f"target {url!r} names no host; write {FORMS}")
    if parts.password is not None:
        raise ConfigError(f"target {url!r} holds a password; use an SSH key (--identity) instead")
    try:
        port = parts.port or 22
    except ValueError:
        raise ConfigError(f"target {url!r} has an invalid port; ports are 1-65535") from None
    return Target(Scheme.SSH, store, host=parts.hostname, port=port, user=parts.username, profile=profile)


def read_targets(path: Path) -> list[Target]:
    """Targets from a file, one `URL [PROFILE]` a line; errors name the file and line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the targets file {str(path)!r}: {exc}") from None
    targets = []
    for number, line in enumerate(lines, 1):
        words = shlex.split(line, comments=True)
        if not words:
            continue
        if len(words) > 2:
            raise ConfigError(f"{path}:{number}: expected `URL [PROFILE]`, got {len(words)} words: {line.strip()!r}")
        try:
            targets.append(parse_target(words[0], words[1] if len(words) == 2 else None))
        except ConfigError as exc:
            raise ConfigError(f"{path}:{number}: {exc}") from None
    if not targets:
        raise ConfigError(f"the targets file {str(path)!r} names no target; one `URL [PROFILE]` a line ({FORMS})")
    return targets
