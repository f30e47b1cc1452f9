"""JSON from untrusted bytes with bounds: size, nesting depth, number size, and no NaN/Infinity.

`json.loads` alone raises RecursionError on deep nesting and ValueError on a 5,000-digit integer; here every
bad input is a BundleError naming what was wrong, and nothing deeper than `max_depth` reaches a validator.
"""

from __future__ import annotations

import json
import math
from typing import Any

from edge_sdk.errors import BundleError

MAX_DEPTH = 32
# Far below json's own 4,300-digit guard, so a long number costs nothing to refuse.
_MAX_NUMBER_CHARS = 40


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > _MAX_NUMBER_CHARS:
        raise BundleError(f"number {text[:20]}… has {len(text)} digits; at most {_MAX_NUMBER_CHARS} are accepted")
    return int(text)


def _parse_float(text: str) -> float:
    if len(text) > _MAX_NUMBER_CHARS * 2:
        raise BundleError(f"number {text[:20]}… is {len(text)} characters long; at most {_MAX_NUMBER_CHARS * 2}")
    value = float(text)
    if not math.isfinite(value):
        raise BundleError(f"number {text[:20]!r} is out of range: only finite numbers are accepted")
    return value


def _refuse_constant(name: str) -> Any:
    raise BundleError(f"{name} is not a JSON number: only finite numbers are accepted")


def loads(raw: bytes, *, what: str, max_bytes: int, max_depth: int = MAX_DEPTH) -> Any:
    """Parse `raw` as JSON, or raise a BundleError that starts with `what` and says why not."""
    if len(raw) > max_bytes:
        raise BundleError(f"{what} is {len(raw)} bytes, more than the limit of {max_bytes}")
    # The depth is bounded before parsing: the C parser recurses once per level, so 100,000 '[' would
    # otherwise be a RecursionError. Counting brackets is a quick upper bound; only then is it scanned exactly.
    if raw.count(b"[") + raw.count(b"{") > max_depth:
        depth = _nesting_depth(raw)
        if depth > max_depth:
            raise BundleError(f"{what} nests {depth} levels deep; at most {max_depth} are accepted")
    try:
        text = raw.decode("utf-8")
        return json.loads(text, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:  # BundleError, JSONDecodeError, UnicodeDecodeError are ValueErrors
        raise BundleError(f"{what} is not valid JSON: {exc}") from None


def _nesting_depth(raw: bytes) -> int:
    """The deepest nesting of arrays and objects, skipping brackets inside strings."""
    depth = peak = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in b"[{":
            depth += 1
            peak = max(peak, depth)
        elif byte in b"]}":
            depth -= 1
    return peak
