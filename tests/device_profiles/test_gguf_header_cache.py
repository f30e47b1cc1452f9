"""GGUF headers kept between processes (device_profiles/gguf_header_cache.py): a daemon's next start does not walk
the vocabulary again, and nothing stale or damaged is ever taken for a header."""

from __future__ import annotations

import json
import struct

import pytest

from device_profiles import gguf_header, gguf_header_cache
from device_profiles.gguf_header import read_gguf_header

STRING, ARRAY, U32 = 8, 9, 4


def _gguf(blocks: int, words: int = 3) -> bytes:
    def s(text: bytes) -> bytes:
        return struct.pack("<Q", len(text)) + text

    vocab = struct.pack("<IQ", STRING, words) + b"".join(s(b"w%d" % i) for i in range(words))
    kvs = [s(b"tokenizer.ggml.tokens") + struct.pack("<I", ARRAY) + vocab]
    kvs.append(s(b"llama.block_count") + struct.pack("<I", U32) + struct.pack("<I", blocks))
    return b"GGUF" + struct.pack("<IQQ", 3, 0, len(kvs)) + b"".join(kvs)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty cache of its own; files count as settled at once (RACY_NS 0), and the memory of this process is
    cleared: what is recalled comes from the disk, as in the next process."""
    monkeypatch.setenv("EDGE_SDK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(gguf_header_cache, "RACY_NS", 0)
    monkeypatch.setattr(gguf_header_cache, "_memory", {})
    return tmp_path / "cache" / "gguf-headers"


def _next_process(monkeypatch) -> list[str]:
    """Forget this process's memory and count the files parsed from now on."""
    parsed: list[str] = []
    parse = gguf_header.parse_gguf_header
    monkeypatch.setattr(gguf_header_cache, "_memory", {})
    monkeypatch.setattr(
        gguf_header, "parse_gguf_header", lambda f, size, name: parsed.append(name) or parse(f, size, name)
    )
    return parsed


def test_a_header_read_once_is_recalled_by_the_next_process_without_reading_the_file(tmp_path, cache, monkeypatch):
    path = tmp_path / "m.gguf"
    path.write_bytes(_gguf(blocks=12, words=5000))
    assert read_gguf_header(path) == {"GGUF.tensor_count": 0, "GGUF.kv_count": 2, "tokenizer.ggml.tokens": 5000,
                                      "llama.block_count": 12}  # fmt: skip
    assert len(list(cache.glob("*.json"))) == 1
    parsed = _next_process(monkeypatch)
    assert read_gguf_header(path)["tokenizer.ggml.tokens"] == 5000
    assert parsed == []


def test_a_file_changed_since_is_read_again(tmp_path, cache, monkeypatch):
    path = tmp_path / "m.gguf"
    path.write_bytes(_gguf(blocks=12))
    read_gguf_header(path)
    path.write_bytes(_gguf(blocks=24, words=4))  # in place: same inode, a new size and ctime
    parsed = _next_process(monkeypatch)
    assert read_gguf_header(path)["llama.block_count"] == 24
    assert parsed == ["m.gguf"]


def test_a_damaged_or_foreign_entry_is_ignored(tmp_path, cache, monkeypatch):
    path = tmp_path / "m.gguf"
    path.write_bytes(_gguf(blocks=12))
    read_gguf_header(path)
    (entry,) = cache.glob("*.json")
    document = json.loads(entry.read_text())
    damages = [
        "{not json",
        json.dumps({**document, "header": {"llama.block_count": [1]}}),  # not a header's values
        json.dumps({**document, "path": str(tmp_path / "other.gguf")}),  # another file's (a hash collision)
        json.dumps([document]),
    ]
    for damaged in damages:
        entry.write_text(damaged)
        parsed = _next_process(monkeypatch)
        assert read_gguf_header(path)["llama.block_count"] == 12
        assert parsed == ["m.gguf"], damaged


def test_a_file_changed_just_now_is_kept_in_memory_only(tmp_path, cache, monkeypatch):
    # Its times may still be those of its next change (a coarse clock): an entry could outlive a rewrite.
    monkeypatch.setattr(gguf_header_cache, "RACY_NS", 60 * 10**9)
    path = tmp_path / "m.gguf"
    path.write_bytes(_gguf(blocks=12))
    assert read_gguf_header(path)["llama.block_count"] == 12
    assert not cache.exists() or list(cache.glob("*.json")) == []
