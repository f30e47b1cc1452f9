"""Read the key-value header of a GGUF file with the stdlib: the numbers a memory estimate needs.

Only the header is read (arrays such as the vocabulary are skipped, their length kept), so this works on a
device without the `gguf` package and costs milliseconds even for multi-GB files. Every length is checked
against the bytes left in the file before anything is read or allocated: a hostile header is refused at once.
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
# general.file_type (llama.cpp's LLAMA_FTYPE) -> our name of the weight type
FILE_TYPES = {
    0: "f32", 1: "fp16", 2: "q4_0", 3: "q4_1", 7: "q8_0", 8: "q5_0", 9: "q5_1", 10: "q2_k", 11: "q3_k_s",
    12: "q3_k_m", 13: "q3_k_l", 14: "q4_k_s", 15: "q4_k_m", 16: "q5_k_s", 17: "q5_k_m", 18: "q6_k", 32: "bf16",
}  # fmt: skip


def _unpack(f: BinaryIO, fmt: str) -> Value:
    size = struct.calcsize("<" + fmt)
    raw = f.read(size)
    if len(raw) != size:
        raise EOFError
    value: Value = struct.unpack("<" + fmt, raw)[0]
    return value


def _left(f: BinaryIO) -> int:
    here = f.tell()
    end = f.seek(0, 2)
    f.seek(here)
    return end - here


def _string(f: BinaryIO) -> str:
    length = int(_unpack(f, "Q"))
    if length > _left(f):
        raise ValueError(f"a string claims {length} bytes, more than the file holds")
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
        smallest = struct.calcsize("<" + _SCALARS[item_kind]) if item_kind in _SCALARS else 8
        if count * smallest > _left(f):
            raise ValueError(f"an array claims {count} items, more than the file holds")
        if item_kind in _SCALARS:  # fixed-size items: skip them in one seek
            f.seek(count * struct.calcsize("<" + _SCALARS[item_kind]), 1)
        elif item_kind == _STRING:  # a vocabulary: skip each string by its length, checked against the file
            left, read, seek, unpack = _left(f), f.read, f.seek, struct.Struct("<Q").unpack
            for _ in range(count):
                raw = read(8)
                (length,) = unpack(raw) if len(raw) == 8 else (left + 1,)
                left -= 8 + length
                if left < 0:
                    raise ValueError("a string array runs past the end of the file")
                seek(length, 1)
        else:
            for _ in range(count):
                _value(f, item_kind)
        return count  # an array is summarised by its length (e.g. the vocabulary size)
    raise ValueError(f"unknown GGUF value type {kind}")


TENSOR_COUNT, KV_COUNT = "GGUF.tensor_count", "GGUF.kv_count"  # the names gguf's reader gives the two counts


def read_gguf_header(path: Path) -> dict[str, Value]:
    """Every key of the header: scalars as they are, arrays as their length; the counts as GGUF.tensor_count and
    GGUF.kv_count."""
    try:
        with path.open("rb") as f:
            if f.read(4) != GGUF_MAGIC:
                raise BundleError(f"{path.name!r} is not a GGUF file (no GGUF magic)")
            version = int(_unpack(f, "I"))
            if version < 2:
                raise BundleError(f"{path.name!r} is GGUF version {version}; versions 2 and 3 are read")
            tensors, count = int(_unpack(f, "Q")), int(_unpack(f, "Q"))
            if count * 13 > _left(f) or tensors * 24 > _left(f):  # the smallest key/value and tensor entries
                raise ValueError(f"it claims {tensors} tensors and {count} keys, more than the file holds")
            header: dict[str, Value] = {TENSOR_COUNT: tensors, KV_COUNT: count}
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
