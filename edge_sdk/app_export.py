"""export_app(): one language-model variant of a bundle as a folder a phone app ships: the model (.pte, or the
ONNX Runtime GenAI folder), its tokenizer, generation config and a small manifest (app.json) — no Python.

An Android or iOS app loads it with ExecuTorch's runner (`TextLLMRunner(model.pte, tokenizer.json)`) or with
ONNX Runtime GenAI (`og.Model(folder)`): the folder is laid out as each of them expects."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from edge_sdk.bundle import Bundle, Variant
from edge_sdk.errors import ConfigError, choices

APP_MANIFEST = "app.json"
_ENGINES = {".pte": "executorch", "genai_config.json": "onnxruntime-genai"}


def _engine_of(variant: Variant) -> tuple[str, str] | None:
    """(engine, the file the app opens) for a language-model variant a phone engine runs, else None."""
    names = {Path(f.path).name for f in variant.files}
    if "llm_config.json" not in names:
        return None
    for name in sorted(names):
        for marker, engine in _ENGINES.items():
            if name.endswith(marker):
                return engine, name
    return None


def export_app(bundle: Bundle, variant_id: str, output: Path, *, overwrite: bool = False) -> Path:
    """Copy `variant_id`'s files (already verified with the bundle) into `output` and write app.json."""
    phone = [v.id for v in bundle.manifest.variants if _engine_of(v) is not None]
    variant = next((v for v in bundle.manifest.variants if v.id == variant_id), None)
    if variant is None or _engine_of(variant) is None:
        what = "has no variant" if variant is None else "has a variant no phone engine here runs:"
        raise ConfigError(
            f"{bundle.name} {what} {variant_id!r}; phone-ready variants (ExecuTorch or ONNX Runtime GenAI "
            f"language models): {choices(phone) if phone else 'none (convert with -b executorch,onnx)'}"
        )
    engine, opens = _engine_of(variant) or ("", "")
    if output.exists():
        if not overwrite:
            raise ConfigError(f"{output} exists; give another directory or --overwrite")
        shutil.rmtree(output)
    output.mkdir(parents=True)
    for entry in variant.files:
        shutil.copyfile(bundle.path_of(entry), output / Path(entry.path).name)
    llm = json.loads((output / "llm_config.json").read_text(encoding="utf-8"))
    manifest: dict[str, Any] = {
        "name": bundle.name,
        "version": bundle.manifest.version,
        "variant": variant.id,
        "engine": engine,
        "engine_version": variant.runtime.version,
        "model": opens if engine == "executorch" else ".",
        "tokenizer": "tokenizer.json",
        "chat_template": "chat_template.jinja" if (output / "chat_template.jinja").is_file() else None,
        "context_length": llm["context_length"],
        "bos_token_id": llm["bos_token_id"],
        "eos_token_ids": llm["eos_token_ids"],
        "quantization": variant.recipe.quantization.value,
        "accuracy": None if variant.accuracy is None else {m.name: m.value for m in variant.accuracy.metrics},
        "files": {Path(f.path).name: f.sha256 for f in variant.files},
    }
    (output / APP_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return output
