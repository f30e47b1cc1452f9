"""Write an LlmModel as GGUF in one weight type: gguf's Python quantizers, or llama.cpp's for K-quants."""

from __future__ import annotations

import ctypes
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from converters.gguf.model import LlmModel
from edge_sdk.errors import BackendUnavailableError, ConfigError, ExportError, choices
from edge_sdk.types import QuantScheme
from runtimes.llama_cpp_adapter import quiet_stderr


@dataclass(frozen=True)
class GgufType:
    """How one QuantScheme is produced: `qtype`/`file_type` name gguf's enums; `llama_ftype` means llama.cpp."""

    precision: str
    qtype: str | None = None  # gguf.GGMLQuantizationType member, written by Python
    file_type: str | None = None  # gguf.LlamaFileType member recorded in general.file_type
    llama_ftype: str | None = None  # llama_cpp.LLAMA_FTYPE_* for llama.cpp's own quantizer


GGUF_TYPES: dict[QuantScheme, GgufType] = {
    QuantScheme.NONE: GgufType("fp32", "F32", "ALL_F32"),
    QuantScheme.F32: GgufType("fp32", "F32", "ALL_F32"),
    QuantScheme.FP16: GgufType("fp16", "F16", "MOSTLY_F16"),
    QuantScheme.BF16: GgufType("bf16", "BF16", "MOSTLY_BF16"),
    QuantScheme.Q8_0: GgufType("q8_0", "Q8_0", "MOSTLY_Q8_0"),
    QuantScheme.Q5_1: GgufType("q5_1", "Q5_1", "MOSTLY_Q5_1"),
    QuantScheme.Q5_0: GgufType("q5_0", "Q5_0", "MOSTLY_Q5_0"),
    QuantScheme.Q4_1: GgufType("q4_1", "Q4_1", "MOSTLY_Q4_1"),
    QuantScheme.Q4_0: GgufType("q4_0", "Q4_0", "MOSTLY_Q4_0"),
    **{
        s: GgufType(s.value, llama_ftype=f"LLAMA_FTYPE_MOSTLY_{s.name}")
        for s in (
            QuantScheme.Q6_K,
            QuantScheme.Q5_K_M,
            QuantScheme.Q5_K_S,
            QuantScheme.Q4_K_M,
            QuantScheme.Q4_K_S,
            QuantScheme.Q3_K_L,
            QuantScheme.Q3_K_M,
            QuantScheme.Q3_K_S,
            QuantScheme.Q2_K,
        )
    },
}


ALIASES = {"f16": QuantScheme.FP16, "fp32": QuantScheme.F32}


def parse_gguf_quant(value: str | QuantScheme) -> QuantScheme:
    """User text ('q4_k_m', 'Q8_0', 'f16') -> a QuantScheme the gguf backend can write, else a ConfigError."""
    text = value.value if isinstance(value, QuantScheme) else str(value).strip().lower().replace("-", "_")
    scheme = ALIASES.get(text)
    if scheme is None:
        scheme = next((s for s in GGUF_TYPES if s.value == text), None)
    if scheme is None:
        raise ConfigError(
            f"the gguf backend cannot apply quantization {value!r}; it supports: "
            f"{choices(s.value for s in GGUF_TYPES)} (and 'f16' for 'fp16')"
        )
    return scheme


def gguf_type(scheme: QuantScheme) -> GgufType:
    try:
        return GGUF_TYPES[scheme]
    except KeyError:
        raise ConfigError(
            f"the gguf backend cannot apply quantization {scheme.value!r}; it supports: "
            f"{choices(s.value for s in GGUF_TYPES)}"
        ) from None


def _keep_f32(name: str, array: np.ndarray) -> bool:
    return array.ndim < 2 or name.endswith("_norm.weight")


def write_gguf(model: LlmModel, path: Path, scheme: QuantScheme) -> Path:
    """Write `model` to `path` with weights in `scheme` (norms stay float32, as llama.cpp's converter does)."""
    spec = gguf_type(scheme)
    if spec.llama_ftype is not None:
        with tempfile.TemporaryDirectory(prefix="edge-gguf-") as tmp:
            f32 = write_gguf(model, Path(tmp) / "f32.gguf", QuantScheme.F32)
            return llama_quantize(f32, path, spec.llama_ftype)
    import gguf

    assert spec.qtype is not None and spec.file_type is not None  # every non-llama.cpp entry names both
    qtype = gguf.GGMLQuantizationType[spec.qtype]
    writer = gguf.GGUFWriter(path, model.arch)
    try:
        writer.add_file_type(int(gguf.LlamaFileType[spec.file_type]))
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        for key, kv in model.metadata.items():
            writer.add_key_value(key, kv.value, kv.vtype, sub_type=kv.sub_type)
        for name, array in model.tensors.items():
            data = np.ascontiguousarray(array, dtype=np.float32)
            target = gguf.GGMLQuantizationType.F32 if _keep_f32(name, data) else qtype
            block = gguf.GGML_QUANT_SIZES[target][0]
            if data.shape[-1] % block:  # a row that is not whole blocks: llama.cpp falls back too
                target = gguf.GGMLQuantizationType.F16
            if target == gguf.GGMLQuantizationType.F32:
                writer.add_tensor(name, data)
            elif target == gguf.GGMLQuantizationType.F16:
                writer.add_tensor(name, data.astype(np.float16))
            else:
                writer.add_tensor(name, gguf.quants.quantize(data, target), raw_dtype=target)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    return path


def llama_quantize(
    src: Path, dest: Path, ftype_name: str, threads: int | None = None, *, allow_requantize: bool = False
) -> Path:
    """Quantize `src` into `dest` with llama.cpp's own quantizer (K-quants and their mixes); `allow_requantize`
    is `llama-quantize --allow-requantize`: tensors already quantized are dequantized and quantized again."""
    try:
        import llama_cpp
    except ModuleNotFoundError as exc:
        raise BackendUnavailableError(
            f"K-quant types need llama.cpp's quantizer from {exc.name!r}: pip install 'edge-sdk[gguf]'"
        ) from exc
    from llama_cpp import _logger

    _logger.set_verbose(False)  # llama.cpp logs every tensor to stderr otherwise; library code stays quiet
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, ftype_name)
    params.nthread = threads or os.cpu_count() or 1
    params.allow_requantize = allow_requantize
    with quiet_stderr():
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dest).encode(), ctypes.byref(params))
    if rc != 0 or not dest.is_file():
        raise ExportError(f"llama.cpp's quantizer failed with code {rc} turning {src.name!r} into {ftype_name}")
    return dest
