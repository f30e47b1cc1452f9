"""Write an LlmModel as GGUF in one weight type: gguf's Python quantizers, or llama.cpp's for K-quants."""

from __future__ import annotations

import ctypes
import os
import re
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from converters.gguf.model import LlmModel
from edge_sdk.errors import BackendUnavailableError, ConfigError, ExportError, choices
from edge_sdk.types import QuantScheme
from runtimes.llama_cpp_quiet import quiet_stderr


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


# Types one tensor can have (a file's scheme such as q4_k_m is a mix of these); the first group gguf-py writes.
PYTHON_TENSOR_TYPES = ("f32", "f16", "bf16", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0")
TENSOR_TYPES = (*PYTHON_TENSOR_TYPES, "q6_k", "q5_k", "q4_k", "q3_k", "q2_k")
TensorTypes = tuple[tuple[str, str], ...]  # (pattern, tensor type): the last pattern found in a name decides


def parse_tensor_types(value: str | Sequence[str] | Sequence[tuple[str, str]] | None) -> TensorTypes:
    """'output=q8_0,token_embd=f16' (or a list of such items, or of pairs) -> validated (pattern, type) pairs.
    A pattern is a regular expression matching a weight's whole GGUF name without '.weight', in any block:
    'output' is output.weight (not attn_output), 'token_embd' the token embedding, 'ffn_down' every block's,
    'blk\\.0\\..*' all of block 0, 'blk\\.1\\.attn_v' one tensor."""
    if value is None:
        return ()
    items = [x for part in value.split(",") for x in [part.strip()] if x] if isinstance(value, str) else list(value)
    rules = []
    for item in items:
        pattern, sep, kind = item.rpartition("=") if isinstance(item, str) else (item[0], "=", item[1])
        pattern, kind = pattern.strip(), kind.strip().lower().replace("fp16", "f16").replace("fp32", "f32")
        if not sep or not pattern:
            raise ConfigError(f"tensor type {item!r}: write PATTERN=TYPE, e.g. output=q8_0,token_embd=f16")
        if kind not in TENSOR_TYPES:
            raise ConfigError(
                f"tensor type {kind!r} in {item!r} is not a GGUF tensor type; valid: {choices(TENSOR_TYPES)}"
            )
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ConfigError(f"tensor name pattern {pattern!r} is not a regular expression: {exc}") from None
        rules.append((pattern, kind))
    return tuple(rules)


def _keep_f32(name: str, array: np.ndarray) -> bool:
    return array.ndim < 2 or name.endswith("_norm.weight")


def anchored(pattern: str) -> str:
    """The pattern as llama.cpp's quantizer searches it (ECMAScript regex): a whole name, in any block."""
    return rf"^(blk\.[0-9]+\.)?({pattern})\.weight$"


def _overridden(name: str, rules: TensorTypes) -> str | None:
    found = None
    for pattern, kind in rules:
        if re.search(anchored(pattern), name):
            found = kind  # the last rule that names a tensor decides, as in llama.cpp
    return found


def _check_rules(model: LlmModel, rules: TensorTypes) -> None:
    """Each pattern must name some weight matrix: a typo would otherwise silently change nothing."""
    names = [n for n, a in model.tensors.items() if not _keep_f32(n, np.asarray(a))]
    for pattern, _ in rules:
        if not any(re.search(anchored(pattern), n) for n in names):
            kinds = sorted({re.sub(r"^blk\.\d+\.", "blk.N.", n).removesuffix(".weight") for n in names})
            raise ConfigError(
                f"tensor pattern {pattern!r} matches no weight of this model; its weights: {choices(kinds)}"
            )


def write_gguf(
    model: LlmModel,
    path: Path,
    scheme: QuantScheme,
    tensor_types: TensorTypes = (),
    imatrix: Mapping[str, np.ndarray] | None = None,
) -> Path:
    """Write `model` to `path` with weights in `scheme` (norms stay float32, as llama.cpp's converter does);
    `tensor_types` give some tensors another type (the output layer at q8_0 in a q4_0 file, ...); `imatrix`
    (GGUF weight name -> importance of each input column) weights their quantization, in llama.cpp's quantizer."""
    spec = gguf_type(scheme)
    _check_rules(model, tensor_types)
    python_types = all(kind in PYTHON_TENSOR_TYPES for _, kind in tensor_types)
    if spec.llama_ftype is not None or not python_types or imatrix is not None:  # llama.cpp writes every type
        ftype = spec.llama_ftype or f"LLAMA_FTYPE_{spec.file_type}"
        # A single-type scheme (q4_0) stays one type, as gguf-py writes it: no llama.cpp mix (`pure`).
        pure = spec.llama_ftype is None
        with tempfile.TemporaryDirectory(prefix="edge-gguf-") as tmp:
            f32 = write_gguf(model, Path(tmp) / "f32.gguf", QuantScheme.F32)
            return llama_quantize(f32, path, ftype, tensor_types=tensor_types, imatrix=imatrix, pure=pure)
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
            kind = None if _keep_f32(name, data) else _overridden(name, tensor_types)
            target = gguf.GGMLQuantizationType.F32 if _keep_f32(name, data) else qtype
            target = gguf.GGMLQuantizationType[kind.upper()] if kind else target
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
    src: Path,
    dest: Path,
    ftype_name: str,
    threads: int | None = None,
    *,
    allow_requantize: bool = False,
    tensor_types: TensorTypes = (),
    imatrix: Mapping[str, np.ndarray] | None = None,
    pure: bool = False,
) -> Path:
    """Quantize `src` into `dest` with llama.cpp's own quantizer (K-quants and their mixes); `allow_requantize`
    is `llama-quantize --allow-requantize` (tensors already quantized are dequantized and quantized again);
    `tensor_types` go to its per-tensor overrides (`llama_model_quantize_params.tt_overrides`, a C array ended by a
    NULL pattern); `imatrix` to `llama_model_quantize_params.imatrix` (name, data, size entries ended by a NULL
    name, what `llama-quantize --imatrix` passes); `pure` quantizes every weight to the file's type (no mix)."""
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
    if tensor_types:
        import gguf

        overrides = (llama_cpp.llama_model_tensor_override * (len(tensor_types) + 1))()
        for slot, (pattern, kind) in zip(overrides, tensor_types, strict=False):
            slot.pattern, slot.type = anchored(pattern).encode(), int(gguf.GGMLQuantizationType[kind.upper()])
        params.tt_overrides = ctypes.cast(overrides, ctypes.POINTER(llama_cpp.llama_model_tensor_override))
    params.pure = pure
    if imatrix is not None:  # the arrays and the entries stay referenced here until llama.cpp has copied them
        vectors = {name: np.ascontiguousarray(v, dtype=np.float32) for name, v in imatrix.items()}
        entries = (llama_cpp.llama_model_imatrix_data * (len(vectors) + 1))()
        for slot, (name, vector) in zip(entries, vectors.items(), strict=False):
            slot.name = name.encode()
            slot.data = vector.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            slot.size = vector.size
        params.imatrix = ctypes.cast(entries, ctypes.POINTER(llama_cpp.llama_model_imatrix_data))
    with quiet_stderr():
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dest).encode(), ctypes.byref(params))
    if rc != 0 or not dest.is_file():
        raise ExportError(f"llama.cpp's quantizer failed with code {rc} turning {src.name!r} into {ftype_name}")
    return dest


def tensor_types_of(path: Path) -> dict[str, str]:
    """Each tensor's type as the file holds it: 'output.weight' -> 'q8_0'."""
    import gguf

    return {t.name: t.tensor_type.name.lower() for t in gguf.GGUFReader(path).tensors}


def describe_tensor_types(types: dict[str, str]) -> dict[str, str]:
    """What a recipe records: the type of most weight matrices, the count per type, and every weight matrix of
    another type by name (a mix's exceptions: the output layer kept at q8_0, llama.cpp's q4_k_m's q6_k tensors)."""
    matrices = {n: t for n, t in types.items() if t != "f32"} or types
    body = Counter(matrices.values()).most_common(1)[0][0]
    counts = Counter(types.values())
    return {
        "tensor_type_body": body,
        "tensor_type_counts": ",".join(f"{t}={n}" for t, n in sorted(counts.items())),
        "tensor_types": ",".join(f"{n}={t}" for n, t in matrices.items() if t != body),
    }
