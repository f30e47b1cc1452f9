"""An existing .gguf file as a source: checked before parsing, read with gguf's reader, dequantized to float32."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from converters.gguf.model import SUPPORTED_ARCHITECTURES, WRITER_KEYS, KeyValue, LlmModel
from converters.gguf.source_base import LlmSource
from device_profiles.gguf_header import read_gguf_header
from edge_sdk.bundle.files import sha256_file
from edge_sdk.errors import BundleError, ModelSourceError, choices

GGUF_MAGIC = b"GGUF"
# The smallest encodings of one key/value pair and one tensor description: anything claiming more entries than
# the file can hold is refused before the reader allocates for them.
MIN_KV_BYTES = 8 + 1 + 4 + 1
MIN_TENSOR_INFO_BYTES = 8 + 1 + 4 + 8 + 4 + 8
MAX_ENTRIES = 1_000_000


def check_header(path: Path) -> tuple[int, int, int]:
    """(version, tensor_count, kv_count) of a GGUF file, refusing impossible counts with a ModelSourceError."""
    if not path.is_file():
        raise ModelSourceError(f"GGUF file {str(path)!r} does not exist")
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(24)
    if len(head) < 24 or head[:4] != GGUF_MAGIC:
        raise ModelSourceError(f"{str(path)!r} is not a GGUF file (no GGUF magic and header; {size} bytes)")
    version, tensors, kvs = struct.unpack("<IQQ", head[4:24])
    if version not in (2, 3):
        raise ModelSourceError(f"{str(path)!r} has GGUF version {version}; supported: 2, 3")
    if tensors > MAX_ENTRIES or kvs > MAX_ENTRIES or tensors * MIN_TENSOR_INFO_BYTES + kvs * MIN_KV_BYTES > size - 24:
        raise ModelSourceError(
            f"{str(path)!r} claims {tensors} tensors and {kvs} metadata entries, more than its {size} bytes "
            "can hold: the header is corrupt or hostile"
        )
    return version, tensors, kvs


def header_of(path: Path) -> dict[str, Any]:
    """The key/values of a GGUF header (arrays as their length), read in milliseconds, refusing a hostile one:
    every claimed length is bounded by the file's size first (gguf's reader loops over whatever count it reads)."""
    check_header(path)
    try:
        return read_gguf_header(path)
    except BundleError as exc:
        raise ModelSourceError(str(exc)) from None


def check_architecture(path: Path) -> str:
    """The architecture of a GGUF, refused from its header alone when the converter cannot re-quantize it."""
    arch = str(header_of(path).get("general.architecture", "<missing>"))
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ModelSourceError(
            f"{path.name!r} is a {arch!r} GGUF; re-quantizing supports {choices(SUPPORTED_ARCHITECTURES)}. "
            "To bundle it as it is (any architecture llama.cpp loads): -q as-is"
        )
    return arch


UNQUANTIZED_FILE_TYPES = {0, 1, 32}  # f32, f16, bf16 (llama.cpp's LLAMA_FTYPE)


def requantize_note(path: Path) -> str | None:
    """What a user should know before re-quantizing an already quantized GGUF, or None for a float one."""
    from device_profiles.gguf_header import FILE_TYPES, header_int

    try:
        file_type = header_int(header_of(path), "general.file_type", 0)
    except BundleError as exc:  # a string or a float where the type should be
        raise ModelSourceError(str(exc)) from None
    if file_type in UNQUANTIZED_FILE_TYPES:
        return None
    kind = FILE_TYPES.get(file_type, f"file type {file_type}").upper()
    return (
        f"{path.name} is already quantized ({kind}): its variants are made from the dequantized {kind} weights, "
        f"and the reference they are measured against is {kind} too. Re-quantizing loses more quality (the KL "
        f"column says how much); a higher precision than {kind} is for format, not quality."
    )


def read_gguf(path: Path) -> Any:
    """A gguf.GGUFReader over `path` after the header check, with every tensor's data inside the file."""
    import gguf

    check_architecture(path)  # the header first: bounded reads, and an architecture we cannot convert refused
    try:
        reader = gguf.GGUFReader(path)
    except Exception as exc:  # the reader raises ValueError, IndexError, ... on a damaged file
        raise ModelSourceError(f"{str(path)!r} is not a readable GGUF file: {type(exc).__name__}: {exc}") from None
    size = path.stat().st_size
    for t in reader.tensors:
        if t.data_offset + t.n_bytes > size or t.data.nbytes != t.n_bytes:
            raise ModelSourceError(
                f"{str(path)!r} is truncated: tensor {t.name!r} needs bytes up to {t.data_offset + t.n_bytes}, "
                f"the file has {size}"
            )
    return reader


def model_from_reader(reader: Any) -> LlmModel:
    """Metadata and float32 tensors (dequantized) of a GGUF reader; a damaged file is a ModelSourceError."""
    try:
        return _model_from_reader(reader)
    except (ValueError, TypeError, KeyError, IndexError, OverflowError, NotImplementedError, RecursionError) as exc:
        if isinstance(exc, ModelSourceError):
            raise
        raise ModelSourceError(f"the GGUF file is damaged: {type(exc).__name__}: {exc}") from None


def _model_from_reader(reader: Any) -> LlmModel:
    import gguf

    metadata: dict[str, KeyValue] = {}
    for key, f in reader.fields.items():
        if key.startswith("GGUF.") or key in WRITER_KEYS:
            continue
        sub = f.types[-1] if f.types[0] == gguf.GGUFValueType.ARRAY else None
        metadata[key] = KeyValue(f.contents(), f.types[0], sub)
    arch_field = reader.fields.get("general.architecture")
    arch = str(arch_field.contents()) if arch_field is not None else "<missing>"
    model = LlmModel(arch=arch, metadata=metadata)
    for t in reader.tensors:
        shape = tuple(int(d) for d in reversed(t.shape.tolist()))  # GGUF lists dims innermost first
        values = gguf.quants.dequantize(t.data, t.tensor_type)
        model.tensors[t.name] = np.asarray(values, dtype=np.float32).reshape(shape)
    return model


@dataclass
class GgufFileSource(LlmSource):
    """A .gguf to re-quantize: read, dequantize to float32 (the reference), quantize to each new type."""

    path: Path
    kind: str = field(default="gguf", init=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self._reader = read_gguf(self.path)
        self._model: LlmModel | None = None

    def load(self) -> LlmModel:
        if self._model is None:
            self._model = self.with_chat_template(model_from_reader(self._reader))
        return self._model

    def requantize_warning(self) -> str | None:
        return requantize_note(self.path)

    def digest(self) -> str:
        return "sha256:" + sha256_file(self.path)

    def describe(self) -> str:
        return self.path.name
