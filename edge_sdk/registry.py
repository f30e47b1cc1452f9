"""The backend registry: Backend -> where its runtime and exporter live, which extra installs them, and what
kind of model its exporter takes.

Nothing here imports an engine. The first use of a backend imports its adapter module; if the engine
is missing, the user is told which extra to install.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from edge_sdk.errors import BackendUnavailableError, ConfigError, choices
from edge_sdk.types import Backend


class Role(StrEnum):
    RUNTIME = "runtime"
    EXPORTER = "exporter"
    LLM_EXPORTER = "llm-exporter"  # where a backend converts language models with an exporter of their own


class SourceKind(StrEnum):
    """What a model is, which decides how its variants are judged."""

    TENSOR = "tensor"  # tensors in, tensors out: judged on its outputs
    LANGUAGE_MODEL = "language-model"  # text in, logits out: judged on KL divergence, top-1 and perplexity


@dataclass(frozen=True)
class BackendEntry:
    engine: str  # the distribution a user would recognise, for messages
    runtime_extra: str  # what a device needs to run it
    convert_extra: str  # what the host needs to produce it
    targets: dict[Role, str]  # role -> "module:Class"
    converts: tuple[SourceKind, ...] = (SourceKind.TENSOR,)  # the kinds of model its exporter takes


_REGISTRY: dict[Backend, BackendEntry] = {
    Backend.ONNX: BackendEntry(
        engine="onnxruntime",
        runtime_extra="onnx",
        convert_extra="convert",
        targets={
            Role.RUNTIME: "runtimes.onnxruntime_adapter:OnnxRuntime",
            Role.EXPORTER: "converters.onnx_export:OnnxExporter",
            Role.LLM_EXPORTER: "converters.llm_onnx_genai:OnnxGenaiExporter",
        },
        converts=(SourceKind.TENSOR, SourceKind.LANGUAGE_MODEL),
    ),
    Backend.EXECUTORCH: BackendEntry(
        engine="executorch",
        runtime_extra="executorch",
        convert_extra="executorch",
        targets={
            Role.RUNTIME: "runtimes.executorch_llm:ExecuTorchLlmRuntime",
            Role.EXPORTER: "converters.executorch_export:ExecuTorchExporter",
            Role.LLM_EXPORTER: "converters.llm_executorch:ExecuTorchLlmExporter",
        },
        converts=(SourceKind.TENSOR, SourceKind.LANGUAGE_MODEL),
    ),
    Backend.GGUF: BackendEntry(
        engine="llama.cpp",
        runtime_extra="gguf",
        convert_extra="gguf",
        targets={
            Role.RUNTIME: "runtimes.llama_cpp_adapter:LlamaCppRuntime",
            Role.EXPORTER: "converters.gguf.exporter:GgufExporter",
        },
        converts=(SourceKind.LANGUAGE_MODEL,),
    ),
    Backend.TFLITE: BackendEntry(
        engine="ai-edge-litert",
        runtime_extra="tflite",
        convert_extra="tflite",
        targets={
            Role.RUNTIME: "runtimes.tflite_adapter:LiteRtRuntime",
            Role.EXPORTER: "converters.tflite_wrap:TfliteWrapExporter",
        },
    ),
}


def register(backend: Backend, entry: BackendEntry) -> None:
    """Add or replace a backend (used by later backends and by tests)."""
    _REGISTRY[backend] = entry


def entry(backend: Backend) -> BackendEntry:
    try:
        return _REGISTRY[backend]
    except KeyError:
        raise ConfigError(
            f"backend {backend.value!r} is not available in this edge-sdk; available: {choices(_REGISTRY)}"
        ) from None


def available_backends() -> list[Backend]:
    return list(_REGISTRY)


def converting(kind: SourceKind) -> list[Backend]:
    """The backends whose exporter takes a model of `kind`, in registry order."""
    return [b for b, e in _REGISTRY.items() if kind in e.converts]


def converting_only(kind: SourceKind) -> list[Backend]:
    """The backends whose exporter takes nothing but a model of `kind` (naming one says what the model is)."""
    return [b for b, e in _REGISTRY.items() if e.converts == (kind,)]


def exporter_role(backend: Backend, kind: SourceKind) -> Role:
    """The role whose class exports a model of `kind` for `backend`: its language-model exporter if it has one."""
    if kind is SourceKind.LANGUAGE_MODEL and Role.LLM_EXPORTER in entry(backend).targets:
        return Role.LLM_EXPORTER
    return Role.EXPORTER


def load(backend: Backend, role: Role) -> Any:
    """Import and return the class registered for (backend, role)."""
    spec = entry(backend)
    target = spec.targets.get(role)
    if target is None:
        raise ConfigError(f"backend {backend.value!r} has no {role.value}")
    module_name, _, attr = target.partition(":")
    extra = spec.runtime_extra if role is Role.RUNTIME else spec.convert_extra
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] == module_name.split(".")[0]:
            raise  # our own module is missing: a packaging bug, not a missing extra
        raise BackendUnavailableError(
            f"the {backend.value} {role.value} needs the package {exc.name!r}, which is not installed: "
            f"pip install 'edge-sdk[{extra}]'"
        ) from exc
    return getattr(module, attr)
