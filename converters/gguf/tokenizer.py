"""Tokenizers to GGUF metadata: byte-level BPE ('gpt2', from tokenizer.json) and SentencePiece ('llama').

Special tokens, merges, `add_bos_token` and the chat template are read by gguf's own `SpecialVocab`, as
llama.cpp's converter does, so both write the same keys.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any

from converters.gguf.model import KeyValue
from edge_sdk.errors import BackendUnavailableError, ModelSourceError

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
HASHES_FILE = Path(__file__).parent / "data" / "pre_tokenizer_hashes.json"


def _kv(key: str, value: Any, kind: str) -> tuple[str, KeyValue]:
    import gguf

    t = gguf.GGUFValueType
    types = {"str": (t.STRING, None), "u32": (t.UINT32, None), "bool": (t.BOOL, None),
             "strs": (t.ARRAY, t.STRING), "i32s": (t.ARRAY, t.INT32), "f32s": (t.ARRAY, t.FLOAT32)}  # fmt: skip
    vtype, sub = types[kind]
    return key, KeyValue(value, vtype, sub)


@functools.cache
def _known_hashes() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(HASHES_FILE.read_text(encoding="utf-8"))
    return data


def pre_tokenizer_hash(path: Path) -> str:
    """llama.cpp's fingerprint of a tokenizer.json: sha256 of the token ids of its check text."""
    try:
        from tokenizers import Tokenizer
    except ModuleNotFoundError as exc:
        raise BackendUnavailableError(
            f"identifying a BPE pre-tokenizer needs {exc.name!r}: pip install 'edge-sdk[gguf]'"
        ) from exc
    try:
        ids = Tokenizer.from_file(str(path)).encode(_known_hashes()["check_text"]).ids
    except Exception as exc:  # the Rust side raises its own Exception type on a malformed file
        raise ModelSourceError(f"{str(path)!r} is not a tokenizer.json the tokenizers library reads: {exc}") from None
    return hashlib.sha256(str(ids).encode()).hexdigest()


def pre_tokenizer_name(path: Path) -> str:
    """llama.cpp's `tokenizer.ggml.pre` for a byte-level BPE tokenizer.json, identified by hash as llama.cpp does."""
    digest, data = pre_tokenizer_hash(path), _known_hashes()
    known = data["hashes"].get(digest)
    if known is None:
        raise ModelSourceError(
            f"the BPE pre-tokenizer of {str(path)!r} (hash {digest[:16]}…) is not one llama.cpp "
            f"{data['llama_cpp_revision']} knows ({len(data['hashes'])} known, e.g. llama-bpe, qwen2, smollm, "
            "gpt-2): llama.cpp would split its text differently from the model's tokenizer"
        )
    return str(known["pre"])


def tokenizer_metadata(directory: Path, vocab_size: int) -> dict[str, KeyValue]:
    """GGUF tokenizer keys for the tokenizer in a Hugging Face directory."""
    if (directory / "tokenizer.json").is_file():
        keys, n_tokens, merges = _bpe(directory / "tokenizer.json", vocab_size), vocab_size, True
    elif (directory / "tokenizer.model").is_file():
        keys, n_tokens, merges = _sentencepiece(directory, vocab_size), vocab_size, False
    else:
        raise ModelSourceError(
            f"{str(directory)!r} has no tokenizer: expected tokenizer.json (byte-level BPE) or tokenizer.model "
            "(SentencePiece)"
        )
    return dict(keys) | special_vocab(directory, n_tokens, load_merges=merges)


def special_vocab(directory: Path, n_vocab: int, *, load_merges: bool) -> dict[str, KeyValue]:
    """Special token ids, merges, add_bos/eos and the chat template, as gguf's SpecialVocab reads them."""
    import gguf

    recorder = gguf.GGUFWriter(path=None, arch="recorder")
    try:
        gguf.SpecialVocab(directory, load_merges=load_merges, n_vocab=n_vocab).add_to_gguf(recorder, quiet=True)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelSourceError(f"the special tokens of {str(directory)!r} are unreadable: {exc}") from None
    kvs = recorder.kv_data[0].items()
    return {k: KeyValue(v.value, v.type, v.sub_type) for k, v in kvs if k != "general.architecture"}


def _bpe(path: Path, vocab_size: int) -> list[tuple[str, KeyValue]]:
    try:
        tok = json.loads(path.read_text(encoding="utf-8"))
        model = tok["model"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise ModelSourceError(f"{str(path)!r} is not a valid tokenizer.json: {exc}") from None
    if model.get("type") != "BPE":
        raise ModelSourceError(
            f"tokenizer model {model.get('type')!r} in {path.name} is not supported; supported: 'BPE'"
        )
    ids: dict[str, int] = dict(model["vocab"])
    added = {a["content"]: a for a in tok.get("added_tokens", [])}
    ids.update({text: a["id"] for text, a in added.items()})
    if max(ids.values()) >= vocab_size:
        raise ModelSourceError(
            f"the tokenizer has token id {max(ids.values())}, the model's vocab_size is {vocab_size}"
        )
    tokens, types = [f"[PAD{i}]" for i in range(vocab_size)], [UNUSED] * vocab_size
    for text, i in ids.items():
        tokens[i] = text
        a = added.get(text)
        types[i] = NORMAL if a is None else (CONTROL if a.get("special") else USER_DEFINED)
    return [
        _kv("tokenizer.ggml.model", "gpt2", "str"),
        _kv("tokenizer.ggml.pre", pre_tokenizer_name(path), "str"),
        _kv("tokenizer.ggml.tokens", tokens, "strs"),
        _kv("tokenizer.ggml.token_type", types, "i32s"),
    ]


def _sentencepiece(directory: Path, vocab_size: int) -> list[tuple[str, KeyValue]]:
    path = directory / "tokenizer.model"
    try:
        import sentencepiece
    except ModuleNotFoundError as exc:
        raise BackendUnavailableError(
            f"reading {path.name} needs the 'sentencepiece' package: pip install sentencepiece"
        ) from exc
    try:
        sp = sentencepiece.SentencePieceProcessor(model_file=str(path))
    except (OSError, RuntimeError) as exc:
        raise ModelSourceError(f"{str(path)!r} is not a SentencePiece model: {exc}") from None
    n = sp.vocab_size()
    if n > vocab_size:
        raise ModelSourceError(f"the SentencePiece model has {n} pieces, the model's vocab_size is {vocab_size}")
    tokens, scores, types = [f"[PAD{i}]" for i in range(vocab_size)], [-10000.0] * vocab_size, [UNUSED] * vocab_size
    for i in range(n):
        tokens[i], scores[i] = sp.id_to_piece(i), sp.get_score(i)
        types[i] = (UNKNOWN if sp.is_unknown(i) else CONTROL if sp.is_control(i) else UNUSED if sp.is_unused(i)
                    else BYTE if sp.is_byte(i) else NORMAL)  # fmt: skip
    config_path = directory / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    for key, data in (config.get("added_tokens_decoder") or {}).items():  # as llama.cpp's converter reads them
        i = int(key)
        if i < vocab_size:
            tokens[i], scores[i] = data["content"], -1000.0
            types[i] = CONTROL if data.get("special") else USER_DEFINED
    return [
        _kv("tokenizer.ggml.model", "llama", "str"),
        _kv("tokenizer.ggml.pre", "default", "str"),
        _kv("tokenizer.ggml.tokens", tokens, "strs"),
        _kv("tokenizer.ggml.scores", scores, "f32s"),
        _kv("tokenizer.ggml.token_type", types, "i32s"),
    ]
