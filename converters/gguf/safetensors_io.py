"""Read .safetensors without trusting them: the header and every tensor's extent are checked before reading."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from edge_sdk.errors import ModelSourceError, choices

MAX_HEADER_BYTES = 100 * 1024 * 1024
DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "F64": np.float64}


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """name -> float32 array of every tensor in `path` (memory-mapped, converted one tensor at a time)."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise ModelSourceError(f"{str(path)!r} is truncated: {size} bytes, no safetensors header")
        (header_len,) = struct.unpack("<Q", head)
        if header_len > min(MAX_HEADER_BYTES, size - 8):
            raise ModelSourceError(
                f"{str(path)!r} declares a {header_len}-byte header in a {size}-byte file: truncated or corrupt"
            )
        try:
            header = json.loads(fh.read(header_len))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ModelSourceError(f"{str(path)!r} has an unreadable safetensors header: {exc}") from None
    if not isinstance(header, dict):
        raise ModelSourceError(f"{str(path)!r} has a safetensors header that is not a JSON object")
    data_start, data_size = 8 + header_len, size - 8 - header_len
    out: dict[str, np.ndarray] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype, shape, (begin, end) = info.get("dtype"), tuple(info.get("shape", ())), info.get("data_offsets", (0, 0))
        if dtype not in DTYPES:
            raise ModelSourceError(f"tensor {name!r} in {path.name} has dtype {dtype!r}; supported: {choices(DTYPES)}")
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if end > data_size or begin < 0 or end - begin != count * np.dtype(DTYPES[dtype]).itemsize:
            raise ModelSourceError(
                f"{str(path)!r} is truncated or corrupt: tensor {name!r} ({dtype} {list(shape)}) claims bytes "
                f"{begin}..{end} of a {data_size}-byte data section"
            )
        raw = np.memmap(path, dtype=DTYPES[dtype], mode="r", offset=data_start + begin, shape=(count,))
        bf16 = dtype == "BF16"  # bfloat16 is the top half of a float32
        out[name] = ((raw.astype(np.uint32) << 16).view(np.float32) if bf16 else raw.astype(np.float32)).reshape(shape)
    return out
