"""Which language-model source a user's argument names: the embedded SmolLM2, a .gguf file, or a Hugging Face
LLaMA directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from converters.gguf.gguf_source import GgufFileSource
from converters.gguf.hf_source import HfSource
from converters.gguf.source_base import LlmSource
from edge_sdk.errors import ConfigError


def resolve_llm_source(model: Any) -> LlmSource:
    """'zoo:smollm2', a .gguf path or a Hugging Face LLaMA directory -> an LLM source for convert_llm."""
    if isinstance(model, LlmSource):
        return model
    if str(model) == "zoo:smollm2":
        from converters.gguf.zoo import smollm2_gguf_path

        return GgufFileSource(smollm2_gguf_path())
    if isinstance(model, str | Path):
        path = Path(model)
        if path.suffix == ".gguf" or path.is_file():
            return gguf_source(path)
        return HfSource(path)
    raise ConfigError(
        f"cannot convert a {type(model).__name__} to GGUF; give 'zoo:smollm2', a .gguf file or a Hugging Face "
        "LLaMA directory (transformers: model.save_pretrained(dir) and tokenizer.save_pretrained(dir))"
    )


def gguf_source(path: Path) -> LlmSource:
    """A .gguf our writer re-quantizes (an architecture it knows), else one llama.cpp's quantizer re-quantizes:
    decided from the header alone."""
    from converters.gguf.gguf_source import header_of
    from converters.gguf.model import SUPPORTED_ARCHITECTURES
    from converters.gguf.requantize import RequantSource

    if header_of(path).get("general.architecture") in SUPPORTED_ARCHITECTURES:
        return GgufFileSource(path)
    return RequantSource(path)


def gguf_path_of(model: Any) -> Path:
    """The .gguf file a user's argument names ('zoo:smollm2' or a path), for bundling it as it is."""
    if str(model) == "zoo:smollm2":
        from converters.gguf.zoo import smollm2_gguf_path

        return smollm2_gguf_path()
    if isinstance(model, str | Path) and (Path(model).suffix == ".gguf" or Path(model).is_file()):
        return Path(model)
    raise ConfigError(f"'-q as-is' bundles a .gguf file as it is; {str(model)!r} is not a .gguf file")
