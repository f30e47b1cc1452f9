"""An importance matrix for GGUF quantization, computed as llama.cpp's `llama-imatrix` does, for llama.cpp's
quantizer to weigh each weight's rounding error by.

The wheel ships no `llama-imatrix` binary, but what it computes is simple: for each weight matrix a matmul
multiplies, the mean over the calibration tokens of x² of each input column (the activations entering it).
llama.cpp's scheduler hands every node it computes to `llama_context_params.cb_eval` (the hook llama-imatrix
uses); we run the model at float32 in llama.cpp on the calibration text with that hook and sum x² of each
MUL_MAT's activations, under the weight's GGUF name, so no name map or rotary permutation is involved.

llama.cpp's quantizer takes the result as `llama_model_quantize_params.imatrix` (converters.gguf.writer), as
`llama-quantize --imatrix` hands it over: the tensor types stay llama.cpp's choice (q4_k_m's q6_k tensors stay
q6_k), and each weight with a vector is quantized by ggml weighing its error by it (all types but q8_0/float).
"""

from __future__ import annotations

import ctypes
import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_sdk.errors import BackendUnavailableError, ConfigError, RuntimeFailure

# Types whose ggml quantizer ignores an importance matrix (q8_0 rounds each weight to nearest) or that are
# not quantized.
NO_IMATRIX_TYPES = frozenset({"f32", "f16", "bf16", "q8_0"})
MIN_CALIBRATION_TOKENS = 16  # llama-imatrix ignores batches of fewer tokens
DEFAULT_CHUNK = 512  # tokens per evaluation, each chunk starting afresh (llama-imatrix's default context)
DEFAULT_MAX_TOKENS = 8192


class _GgmlTensor(ctypes.Structure):
    """The head of ggml.h's `struct ggml_tensor` (ggml 0.25, vendored by llama-cpp-python 0.3.36), up to its
    name; checked at run time against ggml_get_name's offset, so another layout is refused, not misread."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("buffer", ctypes.c_void_p),
        ("ne", ctypes.c_int64 * 4),
        ("nb", ctypes.c_size_t * 4),
        ("op", ctypes.c_int),
        ("op_params", ctypes.c_int32 * 16),
        ("flags", ctypes.c_int32),
        ("src", ctypes.c_void_p * 10),
        ("view_src", ctypes.c_void_p),
        ("view_offs", ctypes.c_size_t),
        ("data", ctypes.c_void_p),
        ("name", ctypes.c_char * 64),
    ]


@functools.cache
def _ggml() -> ctypes.CDLL:
    try:
        import llama_cpp
        from llama_cpp import _ctypes_extensions
    except ModuleNotFoundError as exc:
        raise BackendUnavailableError(f"an importance matrix needs {exc.name!r}: pip install 'edge-sdk[gguf]'") from exc
    lib = _ctypes_extensions.load_shared_library("ggml-base", Path(llama_cpp.__file__).parent / "lib")
    lib.ggml_get_name.argtypes = [ctypes.c_void_p]
    lib.ggml_get_name.restype = ctypes.c_void_p
    lib.ggml_op_name.argtypes = [ctypes.c_int]
    lib.ggml_op_name.restype = ctypes.c_char_p
    lib.ggml_backend_buffer_is_host.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_buffer_is_host.restype = ctypes.c_bool
    return lib


@dataclass(frozen=True)
class ImportanceMatrix:
    """Per weight (GGUF name), the mean of x² of each input column over the calibration tokens."""

    values: dict[str, np.ndarray]
    tokens: int  # calibration tokens evaluated
    chunks: int

    def describe(self) -> str:
        return f"{len(self.values)} weights, {self.tokens} calibration tokens in {self.chunks} chunk(s)"


def _collects(name: str) -> bool:
    """llama-imatrix's choice: the blocks' weights and the output layer (the token embedding is looked up,
    not multiplied: no activations enter it)."""
    return (name.startswith("blk.") and name.endswith(".weight")) or name == "output.weight"


class _Collector:
    def __init__(self) -> None:
        self.lib = _ggml()
        self.sums: dict[str, np.ndarray] = {}
        self.rows: dict[str, int] = {}
        self.checked = False
        self.error: str | None = None

    def _tensor(self, address: int) -> _GgmlTensor:
        t = _GgmlTensor.from_address(address)
        if not self.checked:  # the struct as declared must put `name` where ggml's own accessor finds it
            if self.lib.ggml_get_name(address) != address + _GgmlTensor.name.offset:
                raise RuntimeFailure("this llama.cpp's ggml_tensor layout is not the one the imatrix reads")
            self.checked = True
        return t

    def __call__(self, address: int, ask: bool, _user: int) -> bool:
        try:
            return self._visit(address, ask)
        except Exception as exc:  # an exception must not cross into C: keep it, stop collecting
            self.error = self.error or f"{type(exc).__name__}: {exc}"
            return False

    def _visit(self, address: int, ask: bool) -> bool:
        t = self._tensor(address)
        if self.lib.ggml_op_name(t.op) != b"MUL_MAT" or not t.src[0] or not t.src[1]:
            return False
        weight, act = self._tensor(t.src[0]), self._tensor(t.src[1])
        name = weight.name.decode(errors="replace")
        if ask:
            return _collects(name) and act.type == 0 and act.ne[1] >= 1  # GGML_TYPE_F32 activations
        if not _collects(name):
            return True
        if not act.data or not self.lib.ggml_backend_buffer_is_host(act.buffer):
            raise RuntimeFailure(f"activations of {name} are not in host memory")
        n_col, rows = int(act.ne[0]), int(act.ne[1] * act.ne[2] * act.ne[3])
        if act.nb[0] != 4 or act.nb[1] != 4 * n_col:
            raise RuntimeFailure(f"activations of {name} are not contiguous rows")
        x = np.ctypeslib.as_array(ctypes.cast(act.data, ctypes.POINTER(ctypes.c_float)), shape=(rows, n_col))
        squares = np.einsum("ij,ij->j", x, x, dtype=np.float64)
        self.sums[name] = self.sums.get(name, 0.0) + squares
        self.rows[name] = self.rows.get(name, 0) + rows
        return True


def compute_imatrix(
    reference: Path,
    text: str,
    *,
    chunk: int = DEFAULT_CHUNK,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    threads: int | None = None,
) -> ImportanceMatrix:
    """The importance matrix of the float32 GGUF at `reference` over `text` (chunks of `chunk` tokens, each
    with its BOS, at most `max_tokens` in all), collected from llama.cpp's own evaluation."""
    import llama_cpp

    from runtimes.llama_cpp_adapter import quiet_stderr

    with quiet_stderr():
        model = llama_cpp.llama_model_load_from_file(str(reference).encode(), llama_cpp.llama_model_default_params())
    if not model:
        raise RuntimeFailure(f"llama.cpp could not load {reference.name!r} to compute an importance matrix")
    try:
        vocab = llama_cpp.llama_model_get_vocab(model)
        prefix = _tokenize(vocab, "", special=True)  # the BOS each chunk starts with, if the model adds one
        body = _tokenize(vocab, text, special=False)[:max_tokens]
        chunk = max(MIN_CALIBRATION_TOKENS, min(chunk, _trained_context(reference) or chunk))
        step = chunk - len(prefix)
        pieces = [prefix + body[i : i + step] for i in range(0, len(body), step)]
        pieces = [p for p in pieces if len(p) >= MIN_CALIBRATION_TOKENS]
        if not pieces:
            raise ConfigError(
                f"the calibration text makes {len(body)} tokens; an importance matrix needs at least "
                f"{MIN_CALIBRATION_TOKENS} (give a longer text)"
            )
        collector = _evaluate(model, pieces, chunk, threads)
    finally:
        llama_cpp.llama_model_free(model)
    values = {n: (s / collector.rows[n]).astype(np.float32) for n, s in collector.sums.items()}
    return ImportanceMatrix(values, sum(len(p) for p in pieces), len(pieces))


def _tokenize(vocab: object, text: str, *, special: bool) -> list[int]:
    import llama_cpp

    raw = text.encode("utf-8")
    room = len(raw) + 8
    out = (llama_cpp.llama_token * room)()
    n = llama_cpp.llama_tokenize(vocab, raw, len(raw), out, room, special, False)
    if n < 0:
        raise RuntimeFailure(f"llama.cpp could not tokenize the calibration text ({n})")
    return [int(t) for t in out[:n]]


def _evaluate(model: object, pieces: list[list[int]], chunk: int, threads: int | None) -> _Collector:
    """Run each piece through a fresh KV cache with the collector hooked into llama.cpp's scheduler."""
    import llama_cpp

    from runtimes.llama_cpp_adapter import quiet_stderr

    collector = _Collector()
    callback = llama_cpp.ggml_backend_sched_eval_callback(collector)  # kept alive while the context lives
    params = llama_cpp.llama_context_default_params()
    params.n_ctx = params.n_batch = params.n_ubatch = chunk
    params.n_threads = params.n_threads_batch = threads or os.cpu_count() or 1
    params.cb_eval, params.cb_eval_user_data = callback, None
    with quiet_stderr():
        ctx = llama_cpp.llama_init_from_model(model, params)
    if not ctx:
        raise RuntimeFailure("llama.cpp could not make a context to compute an importance matrix")
    try:
        for piece in pieces:
            llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
            ids = (llama_cpp.llama_token * len(piece))(*piece)
            rc = llama_cpp.llama_decode(ctx, llama_cpp.llama_batch_get_one(ids, len(piece)))
            if rc != 0 or collector.error:
                raise RuntimeFailure(f"computing the importance matrix failed: {collector.error or f'code {rc}'}")
    finally:
        with quiet_stderr():  # llama.cpp reports its buffers on the way out
            llama_cpp.llama_free(ctx)
    if not collector.sums:
        raise RuntimeFailure("llama.cpp evaluated the calibration text but no weight's activations were seen")
    return collector


def _trained_context(path: Path) -> int:
    import gguf

    reader = gguf.GGUFReader(path)
    arch = reader.get_field("general.architecture")
    field = reader.get_field(f"{arch.contents()}.context_length") if arch is not None else None
    return int(field.contents()) if field is not None else 0
