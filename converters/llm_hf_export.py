"""What the ExecuTorch and ONNX Runtime GenAI language-model exporters share: which Hugging Face directories they
take (refused before any export work, naming what is valid), the context their KV cache holds, and the files
that travel with the model so the variant takes text on its own (tokenizer, chat template, llm_config.json)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from converters.gguf.families import rope_parameters
from converters.gguf.hf_source import HfSource
from converters.sources import ModelSource
from device_profiles.estimate import DEFAULT_CONTEXT
from edge_sdk.errors import ConfigError, ModelSourceError, choices

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json")


def hf_source_for(source: ModelSource, engine: str, architectures: tuple[str, ...]) -> HfSource:
    """The source as a Hugging Face directory whose architecture `engine`'s exporter supports, or a refusal."""
    if not isinstance(source, HfSource):
        raise ModelSourceError(
            f"the {engine} language-model exporter reads a Hugging Face directory (config.json, *.safetensors, "
            f"tokenizer.json); got {source.describe()} ({source.kind})"
        )
    if source.hf_arch not in architectures:
        raise ModelSourceError(
            f"architecture {source.hf_arch!r} is not supported by the {engine} language-model exporter; "
            f"supported: {choices(architectures)} (llama.cpp takes more: --backend gguf)"
        )
    rope = rope_parameters(source.config).get("rope_type", "default")
    if rope not in ("default", None):
        raise ModelSourceError(
            f"{source.describe()} uses rope_type {rope!r}, which the {engine} exporter here does not reproduce; "
            "supported: default (llama.cpp takes it: --backend gguf)"
        )
    if not (source.directory / "tokenizer.json").is_file():
        raise ModelSourceError(f"{source.describe()} has no tokenizer.json: the {engine} variant could not take text")
    return source


def model_context(source: HfSource) -> int:
    return int(source.config.get("max_position_embeddings") or DEFAULT_CONTEXT)


def export_context(source: HfSource, requested: int | None) -> int:
    """Tokens of prompt + generation the KV cache holds: what was asked (a plan or a profile), else the
    smaller of the model's trained context and the SDK's default; never more than the model was trained on."""
    trained = model_context(source)
    if requested is None:
        return min(trained, DEFAULT_CONTEXT)
    if requested < 16:
        raise ConfigError(f"a context of {requested} tokens is too short; give at least 16")
    if requested > trained:
        raise ConfigError(
            f"a context of {requested} tokens is longer than {source.describe()} was trained for "
            f"({trained}, max_position_embeddings); give at most {trained}"
        )
    return requested


def write_text_files(source: HfSource, dest: Path, context: int) -> dict[str, Path]:
    """Copy the tokenizer files and write llm_config.json into `dest`: name -> path, for the variant."""
    from runtimes.token_loop import LlmConfig

    files = {}
    for name in TOKENIZER_FILES:
        src = source.directory / name
        if src.is_file() and not (dest / name).exists():
            shutil.copyfile(src, dest / name)
        if (dest / name).is_file():
            files[name] = dest / name
    config = source.config
    eos = config.get("eos_token_id")
    eos_ids = tuple(int(e) for e in (eos if isinstance(eos, list) else [eos] if eos is not None else []))
    tokenizer_config = _json(source.directory / "tokenizer_config.json")
    llm = LlmConfig(
        bos_token_id=config.get("bos_token_id"),
        eos_token_ids=eos_ids,
        add_bos=bool(tokenizer_config.get("add_bos_token", False)),
        context_length=context,
        vocab_size=int(config["vocab_size"]),
        layers=source.dims.layers,
        kv_heads=source.dims.kv_heads,
        head_dim=source.dims.head_dim,
        trained_context=model_context(source),
    )
    files["llm_config.json"] = llm.write(dest)
    return files


def _json(path: Path) -> dict[str, object]:
    if not path.is_file():
        return {}
    raw = json.loads(path.read_text(encoding="utf-8"))
    return raw if isinstance(raw, dict) else {}
