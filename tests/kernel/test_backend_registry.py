"""The backend registry points only into the libraries, and says what kind of model each backend converts."""

from __future__ import annotations

from edge_sdk import registry
from edge_sdk.types import Backend


def test_targets_never_point_into_the_sdk_itself():
    for backend in registry.available_backends():
        for role, target in registry.entry(backend).targets.items():
            assert target.split(".")[0] in ("runtimes", "converters"), (backend, role, target)


def test_each_backend_says_which_kind_of_model_it_converts():
    language = registry.converting(registry.SourceKind.LANGUAGE_MODEL)
    tensor = registry.converting(registry.SourceKind.TENSOR)
    assert Backend.GGUF in language and Backend.GGUF not in tensor
    assert Backend.ONNX in tensor and Backend.ONNX in language  # tensor models, and LLMs via onnxruntime-genai
    assert Backend.EXECUTORCH in tensor and Backend.EXECUTORCH in language
    assert registry.converting_only(registry.SourceKind.LANGUAGE_MODEL) == [Backend.GGUF]
    assert registry.exporter_role(Backend.ONNX, registry.SourceKind.TENSOR) is registry.Role.EXPORTER
    assert registry.exporter_role(Backend.ONNX, registry.SourceKind.LANGUAGE_MODEL) is registry.Role.LLM_EXPORTER
    assert registry.exporter_role(Backend.GGUF, registry.SourceKind.LANGUAGE_MODEL) is registry.Role.EXPORTER
