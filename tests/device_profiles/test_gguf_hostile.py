"""Hostile GGUF headers: the stdlib header reader, gguf's reader behind the GGUF source, and `edge-sdk fit`.

Every length a header claims is checked against the file's real size before anything is read or allocated,
so a 100-byte file claiming a 2^63-byte string or a 2^60-item array is refused at once. Cases found by
tests/fuzz stay here as regression tests.
"""

from __future__ import annotations

import hashlib
import io
import struct
import subprocess
import sys
import time

import numpy as np
import pytest

from device_profiles.estimate import LlmShape
from device_profiles.gguf_header import parse_gguf_header, read_gguf_header
from edge_sdk.errors import BundleError, EdgeSDKError

STRING, ARRAY, U32, U64 = 8, 9, 4, 10


def _s(text: bytes) -> bytes:
    return struct.pack("<Q", len(text)) + text


def _gguf(*kvs: bytes, tensors: int = 0) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, tensors, len(kvs)) + b"".join(kvs)


def _kv(key: bytes, kind: int, payload: bytes) -> bytes:
    return _s(key) + struct.pack("<I", kind) + payload


def _nested_arrays(depth: int, count: int) -> bytes:
    payload = struct.pack("<IQ", U32, 0)
    for _ in range(depth):
        payload = struct.pack("<IQ", ARRAY, count) + payload * min(count, 1)
    return payload


HOSTILE = {
    "string-length-2^63": (_gguf(_kv(b"general.name", STRING, struct.pack("<Q", 2**63))), "claimed at offset"),
    "key-length-2^64-1": (_gguf(struct.pack("<Q", 2**64 - 1) + b"x" * 20), "claimed at offset"),
    "u32-array-2^61": (_gguf(_kv(b"t", ARRAY, struct.pack("<IQ", U32, 2**61))), "claimed at offset"),
    "string-array-2^60": (_gguf(_kv(b"tokenizer.ggml.tokens", ARRAY, struct.pack("<IQ", STRING, 2**60))), "claims"),
    "nested-arrays": (_gguf(_kv(b"t", ARRAY, _nested_arrays(50, 1))), "nested deeper than 2"),
    "kv-count-2^40": (b"GGUF" + struct.pack("<IQQ", 3, 0, 2**40), "metadata entries claimed"),
    "unknown-type": (_gguf(_kv(b"t", 77, b"\x00" * 8)), "unknown GGUF value type 77"),
    "unknown-array-item": (_gguf(_kv(b"t", ARRAY, struct.pack("<IQ", 99, 1))), "unknown GGUF array item type 99"),
    "version-1": (b"GGUF" + struct.pack("<IQQ", 1, 0, 0), "version 1"),
    "no-magic": (b"GGML" + bytes(20), "no GGUF magic"),
    "empty": (b"", "no GGUF magic"),
    "cut": (b"GGUF\x03\x00", "truncated or malformed"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_headers_are_refused_at_once(name):
    data, message = HOSTILE[name]
    start = time.perf_counter()
    with pytest.raises(BundleError, match=message):
        parse_gguf_header(io.BytesIO(data), len(data), "evil.gguf")
    assert time.perf_counter() - start < 1.0


def test_an_array_of_strings_is_bounded_by_the_file_not_by_its_count(tmp_path):
    # 10,000 claimed strings, 3 present: refused after reading what is there, without looping 10,000 times
    # over an empty read.
    items = b"".join(_s(b"ab") for _ in range(3))
    data = _gguf(_kv(b"tokenizer.ggml.tokens", ARRAY, struct.pack("<IQ", STRING, 1_000) + items))
    path = tmp_path / "short.gguf"
    path.write_bytes(data)
    with pytest.raises(BundleError, match="'short.gguf' has a truncated or malformed GGUF header"):
        read_gguf_header(path)


def test_a_string_array_longer_than_a_read_block_is_walked_exactly(tmp_path):
    # The vocabulary is walked in 1 MiB blocks: strings straddling a block's end, and one longer than a block,
    # must leave the reader exactly at the next key.
    words = [b"w%d" % i * (i % 7) for i in range(200_000)] + [b"x" * (3 << 20)] + [b"tail"]
    data = _gguf(
        _kv(b"tokenizer.ggml.tokens", ARRAY, struct.pack("<IQ", STRING, len(words)) + b"".join(map(_s, words))),
        _kv(b"llama.block_count", U32, struct.pack("<I", 30)),
    )
    path = tmp_path / "big-vocab.gguf"
    path.write_bytes(data)
    header = read_gguf_header(path)
    assert header["tokenizer.ggml.tokens"] == len(words)
    assert header["llama.block_count"] == 30


def test_a_file_rewritten_in_place_is_read_again(tmp_path):
    # Headers are remembered per file version (inode, size, mtime, ctime): the daemon reads one three times at
    # start. A file replaced under the same name is a new version.
    path = tmp_path / "m.gguf"
    path.write_bytes(_gguf(_kv(b"llama.block_count", U32, struct.pack("<I", 12))))
    assert read_gguf_header(path)["llama.block_count"] == 12
    read_gguf_header(path)["llama.block_count"] = 99  # a caller's change stays with that caller
    assert read_gguf_header(path)["llama.block_count"] == 12
    # (another size: two writes within one clock tick of the file system may share their mtime and ctime)
    path.write_bytes(_gguf(_kv(b"llama.block_count", U32, struct.pack("<I", 24)), _kv(b"x", U32, bytes(4))))
    assert read_gguf_header(path)["llama.block_count"] == 24


def test_a_string_where_an_integer_belongs_is_a_bundle_error(tmp_path):
    data = _gguf(
        _kv(b"general.architecture", STRING, _s(b"llama")),
        _kv(b"llama.block_count", STRING, _s(b"twelve")),
    )
    path = tmp_path / "typed.gguf"
    path.write_bytes(data)
    assert read_gguf_header(path)["llama.block_count"] == "twelve"
    with pytest.raises(BundleError, match="'llama.block_count' is 'twelve'; an integer is expected"):
        LlmShape.from_gguf(path)


def test_the_gguf_source_refuses_a_claimed_huge_nested_array_quickly(tmp_path):
    """Found by tests/fuzz: gguf's own reader looped for minutes over a nested array's claimed count."""
    gguf = pytest.importorskip("gguf")
    from converters.gguf.gguf_source import read_gguf
    from edge_sdk.errors import ModelSourceError

    path = tmp_path / "seed.gguf"
    w = gguf.GGUFWriter(path, "llama")
    w.add_array("t.nested", [[1, 2], [3]])
    w.add_tensor("x", np.ones(4, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    data = bytearray(path.read_bytes())
    at = data.index(b"t.nested") + len(b"t.nested") + 4 + 4  # the outer array's count
    data[at : at + 8] = struct.pack("<Q", 2**40)
    path.write_bytes(bytes(data))
    start = time.perf_counter()
    with pytest.raises(ModelSourceError, match="truncated or malformed GGUF header"):
        read_gguf(path)
    assert time.perf_counter() - start < 2.0


def test_cli_fit_on_a_hostile_gguf_prints_one_error_line(tmp_path):
    from edge_sdk.bundle import BundleWriter, Recipe, RuntimeRequirement, SourceInfo
    from edge_sdk.types import Backend, QuantScheme, Task

    hostile = tmp_path / "model.gguf"
    hostile.write_bytes(HOSTILE["string-length-2^63"][0] + bytes(64))
    writer = BundleWriter(
        name="evil-llm",
        version="1.0.0",
        task=Task.TEXT_GENERATION,
        source=SourceInfo(kind="gguf", digest=hashlib.sha256(b"x").hexdigest()),
        created_by="tests",
    )
    writer.add_variant(
        variant_id="gguf-q8-0",
        backend=Backend.GGUF,
        files={"model.gguf": hostile},
        inputs=(),
        outputs=(),
        recipe=Recipe(quantization=QuantScheme.Q8_0, precision="q8_0"),
        runtime=RuntimeRequirement(package="llama-cpp-python", version="0.3.36", extra="gguf"),
    )
    bundle = writer.write(tmp_path / "bundle").root
    run = subprocess.run(
        [sys.executable, "-m", "edge_sdk.cli", "fit", str(bundle), "--profile", "rpi5"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = [line for line in (run.stdout + run.stderr).splitlines() if line.strip()]
    assert run.returncode == 1, out
    assert len(out) == 1 and out[0].startswith("error:") and "model.gguf" in out[0], out


def test_every_sdk_error_is_an_edge_sdk_error():
    assert issubclass(BundleError, EdgeSDKError)
