"""Tokenizers to GGUF metadata: byte-level BPE ('gpt2', from tokenizer.json) and SentencePiece ('llama')."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from converters.gguf.model import KeyValue
from edge_sdk.errors import BackendUnavailableError, ModelSourceError

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


def _kv(key: str, value: Any, kind: str) -> tuple[str, KeyValue]:
    import gguf

    t = gguf.GGUFValueType
    types = {"str": (t.STRING, None), "u32": (t.UINT32, None), "bool": (t.BOOL, None),
             "strs": (t.ARRAY, t.STRING), "i32s": (t.ARRAY, t.INT32), "f32s": (t.ARRAY, t.FLOAT32)}  # fmt: skip
    vtype, sub = types[kind]
    return key, KeyValue(value, vtype, sub)


def _pre_tokenizer(tok: dict[str, Any]) -> str:
    """llama.cpp's name for the pre-tokenizer of a byte-level BPE tokenizer.json."""
    pre = tok.get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    types = [p.get("type") for p in parts]
    if types == ["ByteLevel"] and parts[0].get("use_regex", True):
        return "gpt-2"
    if types == ["Digits", "ByteLevel"] and parts[0].get("individual_digits"):
        return "smollm"
    raise ModelSourceError(
        f"byte-level BPE pre-tokenizer {types} is not supported; supported: ['ByteLevel'] (gpt-2), "
        "['Digits', 'ByteLevel'] (smollm)"
    )


def _special(directory: Path) -> dict[str, Any]:
    path = directory / "tokenizer_config.json"
    config = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    template = directory / "chat_template.jinja"
    if "chat_template" not in config and template.is_file():
        config["chat_template"] = template.read_text(encoding="utf-8")
    return config


def _token_text(value: Any) -> str | None:
    return value.get("content") if isinstance(value, dict) else value


def tokenizer_metadata(directory: Path, vocab_size: int) -> dict[str, KeyValue]:
    """GGUF tokenizer keys for the tokenizer in a Hugging Face directory."""
    if (directory / "tokenizer.json").is_file():
        keys, ids = _bpe(directory / "tokenizer.json", vocab_size)
    elif (directory / "tokenizer.model").is_file():
        keys, ids = _sentencepiece(directory / "tokenizer.model", vocab_size)
    else:
        raise ModelSourceError(
            f"{str(directory)!r} has no tokenizer: expected tokenizer.json (byte-level BPE) or tokenizer.model "
            "(SentencePiece)"
        )
    config = _special(directory)
    for role in ("bos", "eos", "unk", "pad"):
        text = _token_text(config.get(f"{role}_token"))
        if text is not None and text in ids:
            key = "unknown" if role == "unk" else ("padding" if role == "pad" else role)
            keys.append(_kv(f"tokenizer.ggml.{key}_token_id", ids[text], "u32"))
    if "add_bos_token" in config:
        keys.append(_kv("tokenizer.ggml.add_bos_token", bool(config["add_bos_token"]), "bool"))
    if isinstance(config.get("chat_template"), str):
        keys.append(_kv("tokenizer.chat_template", config["chat_template"], "str"))
    return dict(keys)


def _bpe(path: Path, vocab_size: int) -> tuple[list[tuple[str, KeyValue]], dict[str, int]]:
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
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    keys = [
        _kv("tokenizer.ggml.model", "gpt2", "str"),
        _kv("tokenizer.ggml.pre", _pre_tokenizer(tok), "str"),
        _kv("tokenizer.ggml.tokens", tokens, "strs"),
        _kv("tokenizer.ggml.token_type", types, "i32s"),
        _kv("tokenizer.ggml.merges", merges, "strs"),
        _kv("tokenizer.ggml.add_bos_token", False, "bool"),
    ]
    return keys, ids


def _sentencepiece(path: Path, vocab_size: int) -> tuple[list[tuple[str, KeyValue]], dict[str, int]]:
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
    tokens, scores, types = [f"[PAD{i}]" for i in range(vocab_size)], [-1000.0] * vocab_size, [UNUSED] * vocab_size
    for i in range(n):
        tokens[i], scores[i] = sp.id_to_piece(i), sp.get_score(i)
        types[i] = (UNKNOWN if sp.is_unknown(i) else CONTROL if sp.is_control(i) else UNUSED if sp.is_unused(i)
                    else BYTE if sp.is_byte(i) else NORMAL)  # fmt: skip
    keys = [
        _kv("tokenizer.ggml.model", "llama", "str"),
        _kv("tokenizer.ggml.pre", "default", "str"),
        _kv("tokenizer.ggml.tokens", tokens, "strs"),
        _kv("tokenizer.ggml.scores", scores, "f32s"),
        _kv("tokenizer.ggml.token_type", types, "i32s"),
        _kv("tokenizer.ggml.bos_token_id", max(sp.bos_id(), 0), "u32"),
        _kv("tokenizer.ggml.eos_token_id", max(sp.eos_id(), 0), "u32"),
        _kv("tokenizer.ggml.unknown_token_id", max(sp.unk_id(), 0), "u32"),
        _kv("tokenizer.ggml.add_bos_token", True, "bool"),
    ]
    return keys, {sp.id_to_piece(i): i for i in range(n)}
