"""A Hugging Face LLaMA or Qwen2 directory -> an ExecuTorch .pte with a static KV cache, through ExecuTorch's own LLM
export path (executorch.examples.models.llama.export_llama_lib, as `python -m executorch.extension.llm.export.
export_llm` runs it): XNNPACK-delegated, custom SDPA updating the cache in place; fp32, or 8-bit dynamic
activations with per-channel 8-bit weights (torchao 8da8w) or with 4-bit grouped weights (torchao 8da4w).

The weights are renamed to ExecuTorch's Llama ("use_hf_rope": no q/k permutation is needed). Lowering, as
ExecuTorch's published llama_xnnpack.yaml lowers: the dynamically-quantized linears first, then every other
operator XNNPACK runs (`extended_ops`; fp32 has no quantized linears, so without them nothing would be
delegated). export_llama's default gives quantized variants only their linears (98% of the FLOPs), and the
rest of each layer (norms, RoPE, residuals, ~55 small operators) then ran on ExecuTorch's portable kernels: a
6-layer model with SmolLM2's widths decoded at 16.7 ms a token in 8da4w, 2.7 ms with the extended ops, and
SmolLM2 itself at 12.6 tok/s, slower than its own fp32. The price is export time: each delegated subgraph
costs ~1 s of XNNPACK passes (that model: 98 s -> 132 s).
One torch.export per variant where export_llama makes two (its first serves PT2E quantizers, which no recipe
here uses). The delegation report is that of tensor models (converters.executorch_export.delegation_report),
written as delegation.json and summarised in the recipe."""

from __future__ import annotations

import importlib.metadata
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from converters.exporter import Exporter, ExportRequest, ExportResult
from converters.llm_hf_export import export_context, hf_source_for, write_text_files
from converters.sources import ModelSource
from edge_sdk.bundle import Recipe, RuntimeRequirement
from edge_sdk.errors import ConfigError, ExportError, choices
from edge_sdk.types import Backend, QuantScheme

if TYPE_CHECKING:
    from converters.executorch_export import DelegationReport

ENGINE = "executorch"
ARCHITECTURES = ("LlamaForCausalLM", "Qwen2ForCausalLM")  # Qwen2: Llama with q/k/v biases
GROUP_SIZE = 32  # 4-bit weight groups (ExecuTorch's published Llama recipes use 32 or 128)
PREFILL_CHUNK = 128  # most prompt tokens one forward call takes (the runner splits longer prompts)

_RENAMES = (
    ("model.layers.", "layers."), ("self_attn.q_proj", "attention.wq"), ("self_attn.k_proj", "attention.wk"),
    ("self_attn.v_proj", "attention.wv"), ("self_attn.o_proj", "attention.wo"), ("mlp.gate_proj", "feed_forward.w1"),
    ("mlp.down_proj", "feed_forward.w2"), ("mlp.up_proj", "feed_forward.w3"),
    ("post_attention_layernorm", "ffn_norm"), ("input_layernorm", "attention_norm"),
)  # fmt: skip
_TOP = {"model.embed_tokens.weight": "tok_embeddings.weight", "model.norm.weight": "norm.weight",
        "lm_head.weight": "output.weight"}  # fmt: skip
PRECISION = {QuantScheme.F32: "fp32", QuantScheme.NONE: "fp32", QuantScheme.INT8_DYNAMIC: "int8",
             QuantScheme.INT8DA_INT4W: "int4"}  # fmt: skip
# ExecuTorch's qmode and weight group size per scheme (group 0: one scale per output channel).
QMODES = {QuantScheme.INT8_DYNAMIC: ("8da8w", 0), QuantScheme.INT8DA_INT4W: ("8da4w", GROUP_SIZE)}


def _runtime() -> RuntimeRequirement:
    try:
        version = importlib.metadata.version("executorch")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return RuntimeRequirement(package="executorch", version=version, extra="executorch")


def meta_checkpoint(source_dir: Path, weight_files: list[Path], tied: bool) -> dict[str, Any]:
    """The HF state dict under ExecuTorch's Llama names."""
    from safetensors.torch import load_file

    state: dict[str, Any] = {}
    for path in weight_files:
        for name, tensor in load_file(str(path)).items():
            if name.endswith("rotary_emb.inv_freq"):
                continue
            new = _TOP.get(name)
            if new is None:
                new = name
                for old, repl in _RENAMES:
                    new = new.replace(old, repl)
            state[new] = tensor.float()
    if "output.weight" not in state or tied:
        state["output.weight"] = state["tok_embeddings.weight"]
    return state


def _build_dir(work: Path) -> Path:
    """Where the checkpoint goes: ExecuTorch's Llama loader picks a quantization by searching the checkpoint's
    path for "int8" or "8da4w" (examples/models/llama/model.py), and a variant's workdir is named after its
    quantization. A directory of its own, beside no such name, keeps the recipe ours."""
    import tempfile

    for _ in range(20):
        build = Path(tempfile.mkdtemp(prefix="edge-et-build-", dir=work.parent))
        if "int8" not in str(build) and "8da4w" not in str(build):
            return build
    raise ExportError(
        f"ExecuTorch's Llama loader would misread a checkpoint under {work.parent} (its path contains 'int8' or "
        "'8da4w'); set TMPDIR to a directory without them"
    )


def _special_tokens(config: dict[str, Any]) -> dict[str, Any]:
    """BOS and end-of-generation ids as the program's constant methods, so ExecuTorch's runner stops as we do."""
    eos = config.get("eos_token_id")
    eos_ids = [int(e) for e in (eos if isinstance(eos, list) else [eos] if eos is not None else [])]
    special: dict[str, Any] = {"get_eos_ids": eos_ids}
    if config.get("bos_token_id") is not None:
        special["get_bos_id"] = int(config["bos_token_id"])
    return special


class ExecuTorchLlmExporter(Exporter):
    backend = Backend.EXECUTORCH
    # 8-bit dynamic goes through torchao's 8da8w (per-channel int8 weights) like 8da4w: the pt2e path
    # (xnnpack_dynamic) imports executorch.examples.models.source_transformation, which the 1.5.1 wheel lacks.
    quantizations = (QuantScheme.F32, QuantScheme.NONE, QuantScheme.INT8_DYNAMIC, QuantScheme.INT8DA_INT4W)

    def check_source(self, source: ModelSource, context: int | None) -> None:
        export_context(hf_source_for(source, ENGINE, ARCHITECTURES), context)

    def export(self, request: ExportRequest) -> ExportResult:
        import torch

        from runtimes.executorch_adapter import quiet_engine

        self.check(request.quantization)
        source = hf_source_for(request.source, ENGINE, ARCHITECTURES)
        context = export_context(source, request.context)
        work = request.workdir
        dims = source.dims
        rope = source.config.get("rope_parameters") or {}
        params = {
            "dim": dims.hidden, "n_layers": dims.layers, "n_heads": dims.heads, "n_kv_heads": dims.kv_heads,
            "vocab_size": dims.vocab, "hidden_dim": dims.ffn, "head_dim": dims.head_dim,
            "norm_eps": float(source.config.get("rms_norm_eps", 1e-5)),
            "rope_theta": float(rope.get("rope_theta", source.config.get("rope_theta", 10000.0))),
            "use_hf_rope": True, "attention_qkv_bias": source.hf_arch == "Qwen2ForCausalLM",
        }  # fmt: skip
        build = _build_dir(work)
        (build / "params.json").write_text(json.dumps(params))
        torch.save(meta_checkpoint(source.directory, source.weight_files, source.tied), build / "checkpoint.pth")
        pte = work / "model.pte"
        try:
            with quiet_engine():
                config = self._config(build, pte, context, request.quantization, _special_tokens(source.config))
                report = _export_program(config, pte)
        except Exception as exc:  # the export raises whatever its passes raise
            raise ExportError(f"ExecuTorch's LLM export failed for {source.describe()}: {exc}") from exc
        finally:
            shutil.rmtree(build, ignore_errors=True)
        report_path = work / "delegation.json"
        report_path.write_text(json.dumps(report.to_dict(), indent=2, sort_keys=True) + "\n")
        files = {"model.pte": pte, "delegation.json": report_path, **write_text_files(source, work, context)}
        options = {"kv_cache": "static", "context": str(context), "sdpa": "custom", **report.options(),
                   "partitioners": "dynamic-quant linears + extended ops"}  # fmt: skip
        if request.quantization is QuantScheme.INT8DA_INT4W:
            options["group_size"] = str(GROUP_SIZE)
        elif request.quantization is QuantScheme.INT8_DYNAMIC:
            options["scheme"] = "8da8w (int8 dynamic activations, per-channel int8 weights)"
        recipe = Recipe(quantization=request.quantization, precision=PRECISION[request.quantization], options=options)
        return ExportResult(files=files, inputs=(), outputs=(), recipe=recipe, runtime=_runtime())

    @staticmethod
    def _config(build: Path, pte: Path, context: int, scheme: QuantScheme, metadata: dict[str, Any]) -> Any:
        from executorch.extension.llm.export.config.llm_config import DtypeOverride, LlmConfig, ModelType

        config = LlmConfig()
        config.base.model_class = ModelType.llama3
        config.base.checkpoint, config.base.params = str(build / "checkpoint.pth"), str(build / "params.json")
        config.base.metadata = json.dumps(metadata)  # constant methods ExecuTorch's runner reads
        config.model.use_kv_cache = config.model.use_sdpa_with_kv_cache = config.model.enable_dynamic_shape = True
        config.model.dtype_override = DtypeOverride.fp32
        config.export.max_seq_length, config.export.max_context_length = min(PREFILL_CHUNK, context), context
        config.export.output_dir, config.export.output_name = str(build), str(pte)
        config.backend.xnnpack.enabled = True
        config.backend.xnnpack.extended_ops = True  # every variant: see the module's docstring
        if scheme in QMODES:
            config.quantization.qmode, config.quantization.group_size = QMODES[scheme]
        return config


def _export_program(config: Any, pte: Path) -> DelegationReport:
    """ExecuTorch's Llama built and source-transformed (quantized) by its own loader, exported once, lowered
    to XNNPACK as export_llama lowers it, and saved; what went to XNNPACK is reported."""
    from executorch.examples.models.llama.export_llama_lib import _prepare_for_llama_export
    from executorch.extension.llm.export.partitioner_lib import get_xnnpack_partitioner

    from converters.executorch_export import delegation_report

    builder = _prepare_for_llama_export(config)
    # to_edge_transform_and_lower exports the module it is given: the eager model, once.
    builder.pre_autograd_graph_module = builder.model
    partitioners = [get_xnnpack_partitioner(dynamic_quant_only_partitioner=True)]
    if config.backend.xnnpack.extended_ops:
        partitioners.append(get_xnnpack_partitioner(dynamic_quant_only_partitioner=False))
    builder.to_edge_transform_and_lower(partitioners)
    report = delegation_report(builder.edge_manager.exported_program().graph_module)
    builder.to_executorch(passes=[])
    builder.save_to_pte(str(pte))
    return report


def quantize_like_export(model: Any, scheme: QuantScheme) -> Any:
    """`model` (a torch module, e.g. transformers' Llama) with its linear layers quantized exactly as the
    exporter quantizes ExecuTorch's Llama for `scheme` (ExecuTorch's own source transform: torchao's
    Int8DynamicActivationIntxWeightConfig, HQQ scales): the eager reference of a quantized variant."""
    from executorch.examples.models.llama.source_transformation.quantize import quantize

    if scheme not in QMODES:
        raise ConfigError(
            f"{scheme.value!r} is not an ExecuTorch quantization; quantized: {choices(q.value for q in QMODES)}"
        )
    qmode, group_size = QMODES[scheme]
    return quantize(model, qmode=qmode, group_size=group_size)
