"""edge-sdk: take a trained model onto small devices, and keep it serving when the device is not enough.

    >>> bundle = edge_sdk.convert(model, {"input": x}, backend="onnx", quantize="int8-static", profile="rpi5")
    >>> edge_sdk.load(bundle).run({"input": x})

Heavy engines (torch, onnxruntime, executorch, llama_cpp) load only when a function needs them.

The package holds two layers of the architecture (README "Layout"): the kernel in its top-level modules
(`errors`, `types`, `bundle/`, `registry`, `store`, `fsutil`, `semver`, `metrics`) and the facade (`api`,
`fitting`, `planning`, re-exported here lazily); the apps (CLI, daemon, gateway, flash) live in `edge_sdk.apps`.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from edge_sdk.version import __version__

_LAZY = {
    "convert": "edge_sdk.api",
    "convert_llm": "edge_sdk.api",
    "load": "edge_sdk.api",
    "open_bundle": "edge_sdk.api",
    "check_golden": "edge_sdk.api",
    "install": "edge_sdk.api",
    # the daemon is an app; the facade layer may not import it, so `serve` lives with it (README "Layout")
    "serve": "edge_sdk.apps.daemon.facade",
    "fit": "edge_sdk.fitting",
    "plan": "edge_sdk.planning",
    "Bundle": "edge_sdk.bundle",
    "Backend": "edge_sdk.types",
    "QuantScheme": "edge_sdk.types",
    "Task": "edge_sdk.types",
    "TensorSpec": "edge_sdk.types",
    "EdgeSDKError": "edge_sdk.errors",
}

if TYPE_CHECKING:
    from edge_sdk.api import check_golden, convert, convert_llm, install, load, open_bundle
    from edge_sdk.apps.daemon.facade import serve
    from edge_sdk.bundle import Bundle
    from edge_sdk.errors import EdgeSDKError
    from edge_sdk.fitting import fit
    from edge_sdk.planning import plan
    from edge_sdk.types import Backend, QuantScheme, Task, TensorSpec


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'edge_sdk' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = [
    "Backend",
    "Bundle",
    "EdgeSDKError",
    "QuantScheme",
    "Task",
    "TensorSpec",
    "__version__",
    "check_golden",
    "convert",
    "convert_llm",
    "fit",
    "install",
    "load",
    "open_bundle",
    "plan",
    "serve",
]
