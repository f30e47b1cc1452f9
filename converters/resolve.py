"""What a user's model argument is, decided in one place for convert and plan.

Hugging Face directory, encoder      -> HfEncoderSource            (default backend: onnx)
Hugging Face directory, causal LM    -> a language model           (default backend: gguf)
.onnx / .gguf / .tflite file         -> that file                  (default: onnx / gguf / tflite)
'file.py:factory'                    -> the torch module it returns (default: onnx)
'zoo:digits-cnn' / 'zoo:smollm2'     -> the embedded models
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from converters.sources import ModelSource
from edge_sdk.errors import ConfigError, ModelSourceError
from edge_sdk.types import Backend

TENSOR_ZOO = ("zoo:digits-cnn",)
LANGUAGE_ZOO = ("zoo:smollm2",)
_CAUSAL = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")
_WHAT = (
    "a Hugging Face model directory (config.json, weights, tokenizer.json), an .onnx, .gguf or .tflite file, "
    "'path/to/file.py:factory', or one of " + ", ".join(TENSOR_ZOO + LANGUAGE_ZOO)
)


class SourceType(StrEnum):
    HF_ENCODER = "huggingface-encoder"
    HF_CAUSAL_LM = "huggingface-causal-lm"
    ONNX = "onnx"
    GGUF = "gguf"
    TFLITE = "tflite"
    FACTORY = "python-factory"
    ZOO_TENSOR = "zoo-tensor"
    ZOO_LANGUAGE = "zoo-language-model"
    MODULE = "torch-module"  # an object passed in Python


DEFAULT_BACKEND = {
    SourceType.HF_ENCODER: Backend.ONNX,
    SourceType.HF_CAUSAL_LM: Backend.GGUF,
    SourceType.ONNX: Backend.ONNX,
    SourceType.GGUF: Backend.GGUF,
    SourceType.TFLITE: Backend.TFLITE,
    SourceType.FACTORY: Backend.ONNX,
    SourceType.ZOO_TENSOR: Backend.ONNX,
    SourceType.ZOO_LANGUAGE: Backend.GGUF,
    SourceType.MODULE: Backend.ONNX,
}
LANGUAGE_TYPES = (SourceType.HF_CAUSAL_LM, SourceType.GGUF, SourceType.ZOO_LANGUAGE)


def source_type(model: Any) -> SourceType:
    """Classify without loading weights (config.json is read as JSON): cheap enough for a default or a refusal."""
    if not isinstance(model, str | Path):
        return SourceType.MODULE
    text = str(model)
    if text in TENSOR_ZOO:
        return SourceType.ZOO_TENSOR
    if text in LANGUAGE_ZOO:
        return SourceType.ZOO_LANGUAGE
    if text.startswith("zoo:"):
        raise ConfigError(f"unknown zoo model {text!r}; valid: {', '.join(TENSOR_ZOO + LANGUAGE_ZOO)}")
    path = Path(text)
    suffix = {".onnx": SourceType.ONNX, ".gguf": SourceType.GGUF, ".tflite": SourceType.TFLITE}.get(path.suffix)
    if suffix is not None:
        return suffix
    if path.is_dir():
        config = path / "config.json"
        if not config.is_file():
            raise ModelSourceError(f"directory {text!r} is not a model: it has no config.json; give {_WHAT}")
        return SourceType.HF_CAUSAL_LM if _is_causal(config) else SourceType.HF_ENCODER
    if ":" in text and text.rpartition(":")[0].endswith(".py"):
        return SourceType.FACTORY
    if path.exists():
        raise ModelSourceError(f"{text!r} is not a model edge-sdk reads; give {_WHAT}")
    raise ModelSourceError(f"model {text!r} does not exist; give {_WHAT}")


def is_language_model(model: Any) -> bool:
    return isinstance(model, str | Path) and source_type(model) in LANGUAGE_TYPES


def default_backend(model: Any) -> Backend:
    return DEFAULT_BACKEND[source_type(model)]


def resolve_tensor_source(
    model: Any,
    example_inputs: Mapping[str, np.ndarray] | None,
    *,
    batch_axes: Mapping[str, int] | None = None,
    static_inputs: Sequence[str] = (),
) -> ModelSource:
    """A tensor model's source: the file, directory or factory the argument names, or the module given.
    `batch_axes` / `static_inputs` declare sample axes an .onnx file's symbolic dims do not make clear."""
    from converters.sources import OnnxFileSource, TorchSource, example_inputs_of, load_factory

    examples = dict(example_inputs) if example_inputs is not None else None
    kind = source_type(model)
    if kind in LANGUAGE_TYPES:
        raise ConfigError(f"{model} is a language model; convert it with --backend gguf")
    if kind is SourceType.ONNX:
        return OnnxFileSource(Path(model), examples or {}, dict(batch_axes or {}), tuple(static_inputs))
    if batch_axes or static_inputs:
        raise ConfigError(
            "--batch-axis and --static-input describe an existing .onnx model's inputs; a torch model's inputs "
            "are batched on axis 0 (its example arrays)"
        )
    if kind is SourceType.TFLITE:
        from converters.tflite_wrap import TfliteFileSource

        return TfliteFileSource(Path(model), examples or {})
    if kind is SourceType.HF_ENCODER:
        from converters.hf_encoder import load_hf_encoder

        source = load_hf_encoder(Path(model))
        if examples:  # the user's own token ids (e.g. longer texts) replace the built-in sentences
            source.example_inputs = examples
        return source
    description = ""
    if kind is SourceType.ZOO_TENSOR:
        from converters.zoo import digits_cnn

        description, model = str(model), digits_cnn()
    elif kind is SourceType.FACTORY:
        description, model = str(model), load_factory(str(model))
    examples = examples or example_inputs_of(model)
    if examples is None:
        raise ConfigError("a torch model needs example inputs: pass example_inputs (or --input-shape / --example)")
    return TorchSource(model, examples, description=description)


def _is_causal(config: Path) -> bool:
    try:
        data = json.loads(config.read_text())
    except (OSError, ValueError) as exc:
        raise ModelSourceError(f"{str(config)!r} is not valid JSON: {exc}") from None
    names = data.get("architectures") or [] if isinstance(data, dict) else []
    return any(str(n).endswith(_CAUSAL) for n in names)
