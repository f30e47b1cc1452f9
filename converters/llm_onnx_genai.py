"""A Hugging Face LLaMA directory -> an ONNX Runtime GenAI model folder (model.onnx + weights, genai_config.json,
tokenizer), built by onnxruntime-genai's own model builder: a decoder with its KV cache as inputs/outputs,
GroupQueryAttention, fp32 or int4 weights (MatMulNBits, blocks of 32, int8 activations on CPU).

The builder runs in a child process: it imports torch and transformers and prints progress bars of its own."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

from converters.exporter import Exporter, ExportRequest, ExportResult
from converters.llm_hf_export import export_context, hf_source_for, write_text_files
from converters.sources import ModelSource
from edge_sdk.bundle import Recipe, RuntimeRequirement
from edge_sdk.errors import BackendUnavailableError, ExportError
from edge_sdk.types import Backend, QuantScheme

ENGINE = "onnxruntime-genai"
ARCHITECTURES = ("LlamaForCausalLM", "Qwen2ForCausalLM")
BLOCK_SIZE = 32
_PRECISION = {QuantScheme.F32: "fp32", QuantScheme.NONE: "fp32", QuantScheme.INT4: "int4"}


def _runtime() -> RuntimeRequirement:
    try:
        version = importlib.metadata.version("onnxruntime-genai")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return RuntimeRequirement(package="onnxruntime-genai", version=version, extra="onnx-genai")


class OnnxGenaiExporter(Exporter):
    backend = Backend.ONNX
    quantizations = tuple(_PRECISION)

    def check_source(self, source: ModelSource, context: int | None) -> None:
        export_context(hf_source_for(source, ENGINE, ARCHITECTURES), context)
        try:
            importlib.metadata.version("onnxruntime-genai")
        except importlib.metadata.PackageNotFoundError:
            raise BackendUnavailableError(
                "ONNX language-model variants are built by onnxruntime-genai's model builder, which is not "
                "installed: pip install 'edge-sdk[onnx-genai]'"
            ) from None

    def export(self, request: ExportRequest) -> ExportResult:
        self.check(request.quantization)
        source = hf_source_for(request.source, ENGINE, ARCHITECTURES)
        context = export_context(source, request.context)
        out, precision = request.workdir / "model", _PRECISION[request.quantization]
        given = _builder_input(source.directory, request.workdir)
        command = [
            sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(given), "-o", str(out),
            "-p", precision, "-e", "cpu", "-c", str(request.workdir / "cache"),
        ]  # fmt: skip
        if precision == "int4":
            command += ["--extra_options", f"block_size={BLOCK_SIZE}"]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
            raise ExportError(f"onnxruntime-genai's model builder failed for {source.describe()}: " + " | ".join(tail))
        _set_context(out / "genai_config.json", context)
        files = {p.name: p for p in sorted(out.iterdir()) if p.is_file()}
        files.update(write_text_files(source, out, context))
        options = {"kv_cache": "inputs/outputs", "context": str(context), "builder": ENGINE}
        if precision == "int4":
            options.update(block_size=str(BLOCK_SIZE), op="MatMulNBits")
        recipe = Recipe(quantization=request.quantization, precision=precision, options=options)
        return ExportResult(files=files, inputs=(), outputs=(), recipe=recipe, runtime=_runtime())


def _builder_input(directory: Path, workdir: Path) -> Path:
    """The directory the builder reads. A model transformers loaded from a GGUF and saved again keeps
    `quantization_config: {"quant_method": "gguf"}` in its config.json although its safetensors hold float
    weights (transformers dequantizes a GGUF as it reads it and cannot save one); the builder refuses such a
    directory as "gguf quantized". It then gets a copy of config.json without that key beside links to the rest."""
    config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    if (config.get("quantization_config") or {}).get("quant_method") != "gguf":
        return directory
    del config["quantization_config"]
    shadow = workdir / "source"
    shadow.mkdir(parents=True, exist_ok=True)
    for path in directory.iterdir():
        if path.name != "config.json" and not (shadow / path.name).exists():
            (shadow / path.name).symlink_to(path.resolve())
    (shadow / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return shadow


def _set_context(path: Path, context: int) -> None:
    """The KV cache a session allocates: the planned context, not always the model's trained maximum."""
    config = json.loads(path.read_text(encoding="utf-8"))
    config["model"]["context_length"] = context
    config["search"]["max_length"] = context
    path.write_text(json.dumps(config, indent=4) + "\n", encoding="utf-8")
