"""Read the key-value header of a GGUF file with the stdlib: the numbers a memory estimate needs.

Only the header is read (arrays such as the vocabulary are skipped, their length kept), so this works on a
device without the `gguf` package and costs milliseconds even for multi-GB files.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

from edge_sdk.errors import BundleError

GGUF_MAGIC = b"GGUF"
# GGUF value types -> struct format of a scalar (8 = string, 9 = array are handled apart)
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9

Value = int | float | bool | str


def _unpack(f: BinaryIO, fmt: str) -> Value:
    size = struct.calcsize("<" + fmt)
    raw = f.read(size)
    if len(raw) != size:
        raise EOFError
    value: Value = struct.unpack("<" + fmt, raw)[0]
    return value


def _string(f: BinaryIO) -> str:
    length = int(_unpack(f, "Q"))
    raw = f.read(length)
    if len(raw) != length:
        raise EOFError
    return raw.decode("utf-8", "replace")


def _value(f: BinaryIO, kind: int) -> Value | None:
    if kind in _SCALARS:
        return _unpack(f, _SCALARS[kind])
    if kind == _STRING:
        return _string(f)
    if kind == _ARRAY:
        item_kind, count = int(_unpack(f, "I")), int(_unpack(f, "Q"))
        if item_kind in _SCALARS:  # fixed-size items: skip them in one seek
            f.seek(count * struct.calcsize("<" + _SCALARS[item_kind]), 1)
        else:
            for _ in range(count):
                _value(f, item_kind)
        return count  # an array is summarised by its length (e.g. the vocabulary size)
    raise ValueError(f"unknown GGUF value type {kind}")


def read_gguf_header(path: Path) -> dict[str, Value]:
    """Every key of the header: scalars as they are, arrays as their length."""
    try:
        with path.open("rb") as f:
            if f.read(4) != GGUF_MAGIC:
                raise BundleError(f"{path.name!r} is not a GGUF file (no GGUF magic)")
            version = int(_unpack(f, "I"))
            if version < 2:
                raise BundleError(f"{path.name!r} is GGUF version {version}; versions 2 and 3 are read")
            _tensors, count = _unpack(f, "Q"), int(_unpack(f, "Q"))
            header: dict[str, Value] = {}
            for _ in range(count):
                key = _string(f)
                value = _value(f, int(_unpack(f, "I")))
                if value is not None:
                    header[key] = value
            return header
    except (EOFError, ValueError, struct.error) as exc:
        raise BundleError(
            f"{path.name!r} has a truncated or malformed GGUF header: {exc or 'unexpected end'}"
        ) from None
