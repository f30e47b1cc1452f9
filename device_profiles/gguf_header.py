"""Read the key-value header of a GGUF file with the stdlib: the numbers a memory estimate needs.

Only the header is read (arrays such as the vocabulary are skipped, their length kept), so this works on a
device without the `gguf` package and costs milliseconds even for multi-GB files. Every length is checked
against the bytes left in the file before anything is read or allocated: a hostile header is refused at once.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import BinaryIO

from device_profiles.gguf_header_cache import Value, recall, remember, version_of
from edge_sdk.errors import BundleError

GGUF_MAGIC = b"GGUF"
# GGUF value types -> struct format of a scalar (8 = string, 9 = array are handled apart)
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
# The smallest key/value pair: an empty key (8-byte length), a type (4) and a one-byte value.
MIN_KV_BYTES = 8 + 4 + 1

# general.file_type (llama.cpp's LLAMA_FTYPE) -> our name of the weight type
FILE_TYPES = {
    0: "f32", 1: "fp16", 2: "q4_0", 3: "q4_1", 7: "q8_0", 8: "q5_0", 9: "q5_1", 10: "q2_k", 11: "q3_k_s",
    12: "q3_k_m", 13: "q3_k_l", 14: "q4_k_s", 15: "q4_k_m", 16: "q5_k_s", 17: "q5_k_m", 18: "q6_k", 32: "bf16",
}  # fmt: skip


_LENGTH = struct.Struct("<Q")  # a string's byte length
_BLOCK = 1 << 20  # how much of a string array is read at once

# Arrays of arrays are legal GGUF but no model uses more than one level; the bound keeps recursion finite.
MAX_ARRAY_DEPTH = 2


class _Reader:
    """Reads that never go past the file's real end: a claimed length is checked before anything is allocated."""

    def __init__(self, f: BinaryIO, size: int) -> None:
        self.f, self.size = f, size

    def left(self) -> int:
        return self.size - self.f.tell()

    def take(self, n: int) -> bytes:
        if n > self.left():
            raise EOFError(f"{n} bytes claimed at offset {self.f.tell()}, {self.left()} left in the file")
        return self.f.read(n)

    def skip(self, n: int) -> None:
        if n > self.left():
            raise EOFError(f"{n} bytes claimed at offset {self.f.tell()}, {self.left()} left in the file")
        self.f.seek(n, 1)

    def unpack(self, fmt: str) -> Value:
        value: Value = struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))[0]
        return value

    def string(self) -> str:
        length = int(self.unpack("Q"))
        if length > self.left():
            raise EOFError(
                f"a string claims {length} bytes ({length} bytes claimed at offset {self.f.tell()}, "
                f"{self.left()} left in the file)"
            )
        return self.take(length).decode("utf-8", "replace")

    def skip_strings(self, count: int) -> None:
        """A vocabulary: each string skipped by its length (checked against the file), none decoded. The lengths
        are walked in a buffer read in large blocks: one read and seek per string made a 49k-token vocabulary
        cost ~30 ms, paid at every daemon start."""
        f, unpack_from = self.f, _LENGTH.unpack_from
        base = f.tell()  # file offset of buf[0]
        end = base + self.left()
        buf, at, held = b"", 0, 0
        for _ in range(count):
            if at + 8 > held:  # the next length is not in the buffer: read on from it
                base += at
                if base + 8 > end:
                    raise EOFError("a string array runs past the end of the file")
                f.seek(base)
                buf, at = f.read(_BLOCK), 0
                held = len(buf)
            at += 8 + unpack_from(buf, at)[0]
        if base + at > end:
            raise EOFError("a string array runs past the end of the file")
        f.seek(base + at)

    def value(self, kind: int, depth: int = 0) -> Value:
        if kind in _SCALARS:
            return self.unpack(_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            if depth >= MAX_ARRAY_DEPTH:
                raise ValueError(f"arrays nested deeper than {MAX_ARRAY_DEPTH} levels")
            item_kind, count = int(self.unpack("I")), int(self.unpack("Q"))
            smallest = struct.calcsize("<" + _SCALARS[item_kind]) if item_kind in _SCALARS else 8
            if item_kind in (*_SCALARS, _STRING, _ARRAY) and count * smallest > self.left():  # before looping
                raise EOFError(
                    f"an array claims {count} items ({count * smallest} bytes claimed at offset {self.f.tell()}, "
                    f"{self.left()} left in the file)"
                )
            if item_kind in _SCALARS:  # fixed-size items: skip them in one seek
                self.skip(count * smallest)
            elif item_kind == _STRING:
                self.skip_strings(count)
            elif item_kind == _ARRAY:
                for _ in range(count):
                    self.value(item_kind, depth + 1)
            else:
                raise ValueError(f"unknown GGUF array item type {item_kind}")
            return count  # an array is summarised by its length (e.g. the vocabulary size)
        raise ValueError(f"unknown GGUF value type {kind}; known: 0-12")


TENSOR_COUNT, KV_COUNT = "GGUF.tensor_count", "GGUF.kv_count"  # the names gguf's reader gives the two counts
MIN_TENSOR_INFO_BYTES = 24  # the smallest tensor description: an empty name, one dimension, type and offset


def read_gguf_header(path: Path) -> dict[str, Value]:
    """Every key of the header: scalars as they are, arrays as their length; the counts as GGUF.tensor_count and
    GGUF.kv_count. A file read before and unchanged since is not read again (gguf_header_cache says how)."""
    try:
        with path.open("rb") as f:
            resolved, version = str(path.resolve()), version_of(os.fstat(f.fileno()))
            header = recall(resolved, version)
            if header is None:
                header = parse_gguf_header(f, version[1], path.name)
                remember(resolved, version, header)
            return dict(header)  # a copy: a caller's change does not reach the next caller
    except OSError as exc:
        raise BundleError(f"{path.name!r} cannot be read: {exc}") from None


def parse_gguf_header(f: BinaryIO, size: int, name: str) -> dict[str, Value]:
    """`read_gguf_header` of an open file of `size` bytes; any damage is a BundleError naming `name`."""
    r = _Reader(f, size)
    try:
        if f.read(4) != GGUF_MAGIC:
            raise BundleError(f"{name!r} is not a GGUF file (no GGUF magic)")
        version = int(r.unpack("I"))
        if version not in (2, 3):
            raise BundleError(f"{name!r} is GGUF version {version}; versions 2 and 3 are read")
        tensors, count = int(r.unpack("Q")), int(r.unpack("Q"))
        if count * MIN_KV_BYTES > r.left():
            raise EOFError(f"{count} metadata entries claimed, {r.left()} bytes left in the file")
        if tensors * MIN_TENSOR_INFO_BYTES > r.left():
            raise EOFError(f"{tensors} tensors claimed, {r.left()} bytes left in the file")
        header: dict[str, Value] = {TENSOR_COUNT: tensors, KV_COUNT: count}
        for _ in range(count):
            key = r.string()
            header[key] = r.value(int(r.unpack("I")))
        return header
    except (EOFError, ValueError, struct.error) as exc:
        if isinstance(exc, BundleError):
            raise
        raise BundleError(f"{name!r} has a truncated or malformed GGUF header: {exc or 'unexpected end'}") from None


def header_int(header: dict[str, Value], key: str, default: int) -> int:
    """An integer field of a header, or a BundleError when a hostile file put a string or a float there."""
    value = header.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise BundleError(f"GGUF key {key!r} is {value!r}; an integer is expected")
    return value
