"""A seeded mutation fuzzer for the readers of untrusted bytes: every input must end in an EdgeSDKError or succeed.

Each reader has seeds (valid inputs built here, no download) and mutators that know its format a little:
JSON nodes replaced by hostile values (deep nesting, 5,000-digit numbers, NaN), tar headers edited with their
checksum fixed (so the change reaches the reader instead of failing the checksum), GGUF length fields set to
huge values, plus plain byte flips, splices and truncations. The same seed gives the same inputs, so a failure
is reproducible from (reader, seed, index); `run.py` is the long run (`make fuzz`), `test_fuzz_brief.py` the
short one in `make test`.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import shutil
import signal
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_sdk.errors import EdgeSDKError

Mutator = Callable[[random.Random, bytes, list[bytes]], bytes]
INTERESTING = [0, 1, 2, 7, 255, 256, 2**15, 2**16 - 1, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**62, 2**63 - 1, 2**63,
               2**64 - 1]  # fmt: skip


class Hang(BaseException):
    pass


# --------------------------------------------------------------------------------------- generic mutations
def flip_bits(rng: random.Random, data: bytes, _: list[bytes]) -> bytes:
    if not data:
        return b"\x00"
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    return bytes(out)


def set_int(rng: random.Random, data: bytes, _: list[bytes]) -> bytes:
    """An interesting 1/2/4/8-byte little-endian integer at a random offset: lengths, counts, types."""
    width = rng.choice([1, 2, 4, 8])
    if len(data) < width:
        return data + b"\xff" * width
    value = rng.choice(INTERESTING) % (1 << (8 * width))
    at = rng.randrange(len(data) - width + 1)
    return data[:at] + value.to_bytes(width, "little") + data[at + width :]


def cut(rng: random.Random, data: bytes, _: list[bytes]) -> bytes:
    if len(data) < 2:
        return b""
    a = rng.randrange(len(data))
    b = min(len(data), a + rng.choice([1, 4, 16, 512, len(data)]))
    return data[:a] + data[b:]


def truncate(rng: random.Random, data: bytes, _: list[bytes]) -> bytes:
    return data[: rng.randrange(len(data) + 1)]


def duplicate(rng: random.Random, data: bytes, _: list[bytes]) -> bytes:
    if not data:
        return data
    a = rng.randrange(len(data))
    chunk = data[a : a + rng.choice([1, 8, 64, 512, 4096])]
    at = rng.randrange(len(data) + 1)
    return data[:at] + chunk * rng.choice([1, 2, 16]) + data[at:]


def splice(rng: random.Random, data: bytes, seeds: list[bytes]) -> bytes:
    other = rng.choice(seeds)
    return data[: rng.randrange(len(data) + 1)] + other[rng.randrange(len(other) + 1) :]


GENERIC: list[Mutator] = [flip_bits, set_int, cut, truncate, duplicate, splice]


# --------------------------------------------------------------------------------------- JSON mutations
_HOSTILE_JSON = [
    "[" * 100_000 + "]" * 100_000, "{" * 5_000, '{"a":' * 2_000 + "1" + "}" * 2_000, "9" * 5_000, "-" + "9" * 400,
    "1e999", "-1e999", "NaN", "Infinity", "-Infinity", "1e-99999", "18446744073709551616", "-1", "0", "0.5",
    '"\\ud800"', '"../../etc/passwd"', '"/abs"', '"a\\u0000b"', '"\\\\x"', '""', '"' + "a" * 200_000 + '"',
    "null", "true", "false", "[]", "{}", '[""]', '{"":""}', '"1.0.0+build"', '"9999999999999999999999.0.0"',
]  # fmt: skip


def _nodes(value: object, path: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    found = [path]
    if isinstance(value, dict):
        for k, v in value.items():
            found += _nodes(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found += _nodes(v, (*path, i))
    return found


def json_node(rng: random.Random, data: bytes, _: list[bytes]) -> bytes:
    """Replace one node of a JSON document by a hostile value, or drop a key, or add an unknown one."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        return flip_bits(rng, data, _)
    paths = _nodes(doc)
    path = rng.choice(paths)
    if not path:
        return rng.choice(_HOSTILE_JSON).encode()
    parent = doc
    for step in path[:-1]:
        parent = parent[step]  # type: ignore[index]
    action = rng.random()
    if action < 0.1 and isinstance(parent, dict):
        del parent[path[-1]]
        return json.dumps(doc).encode()
    if action < 0.2 and isinstance(parent, dict):
        parent["unknown_" + str(rng.randrange(99))] = 1
        return json.dumps(doc).encode()
    parent[path[-1]] = "__HOSTILE__"  # type: ignore[index]
    return json.dumps(doc).encode().replace(b'"__HOSTILE__"', rng.choice(_HOSTILE_JSON).encode(), 1)


# --------------------------------------------------------------------------------------- tar mutations
_TAR_FIELDS = {"name": (0, 100), "mode": (100, 8), "size": (124, 12), "typeflag": (156, 1), "linkname": (157, 100),
               "magic": (257, 6), "prefix": (345, 155)}  # fmt: skip
_TYPEFLAGS = b"0123456789xgLKSDMNVAZ\x00 "


def _header_offsets(data: bytes) -> list[int]:
    offsets, at = [], 0
    while at + 512 <= len(data):
        block = data[at : at + 512]
        if block == bytes(512):
            break
        offsets.append(at)
        try:
            size = int(block[124:136].split(b"\x00")[0].strip() or b"0", 8)
        except ValueError:
            break
        at += 512 + (size + 511) // 512 * 512
    return offsets


def _fix_checksum(block: bytearray) -> None:
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\x00 " % sum(block)


def tar_header(rng: random.Random, data: bytes, _: list[bytes]) -> bytes:
    """Edit one field of one member header and fix its checksum, so tarfile reads the edit."""
    offsets = _header_offsets(data)
    if not offsets:
        return flip_bits(rng, data, _)
    at = rng.choice(offsets)
    block = bytearray(data[at : at + 512])
    name = rng.choice(list(_TAR_FIELDS))
    start, width = _TAR_FIELDS[name]
    choice = rng.random()
    if name == "typeflag":
        value = bytes([rng.choice(_TYPEFLAGS)])
    elif name in ("size", "mode") and choice < 0.5:
        number = rng.choice([0, 1, 511, 512, 4096, 1 << 30, 1 << 33, 8**11 - 1])
        value = (b"%011o\x00" % number)[-width:] if number < 8**11 else b"\x80" + number.to_bytes(width - 1, "big")
    elif name in ("size", "mode"):
        value = b"\x80" + rng.randbytes(width - 1)  # base-256: the huge numbers
    elif choice < 0.3:
        value = rng.choice([b"../x", b"/etc/x", b"manifest.json", b"a/../../b", b"\xff\xfe", b"manifest.json/x",
                            b".", b"", b"golden", b"x" * width])  # fmt: skip
    else:
        value = rng.randbytes(rng.randint(1, width))
    block[start : start + width] = value[:width].ljust(width, b"\x00")
    _fix_checksum(block)
    return data[:at] + bytes(block) + data[at + 512 :]


def _tar_bytes(members: list[tuple[tarfile.TarInfo, bytes | None]], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for info, payload in members:
            tar.addfile(info, io.BytesIO(payload) if payload is not None else None)
    return buf.getvalue()


def sparse_member(name: str, real_size: int, stored: bytes = b"x" * 512) -> bytes:
    """A PAX 1.0 sparse member: `stored` bytes at the end of a `real_size`-byte file of zeros."""
    sparse_map = f"1\n{real_size - len(stored)}\n{len(stored)}\n".encode().ljust(512, b"\x00")
    info = tarfile.TarInfo("GNUSparseFile.0/" + name)
    info.size = len(sparse_map) + len(stored)
    info.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.name": name,
                        "GNU.sparse.realsize": str(real_size)}  # fmt: skip
    return _tar_bytes([(info, sparse_map + stored)])[:-1024]  # without the end-of-archive blocks


def tar_members(rng: random.Random, data: bytes, _: list[bytes]) -> bytes:
    """Append a hostile member before the end blocks: sparse, link, device, a file under a file, a repeat."""
    end = len(data)
    while end >= 512 and data[end - 512 : end] == bytes(512):
        end -= 512
    name = rng.choice(["manifest.json", "manifest.sig", "golden/inputs.npz", "x", "manifest.json/x", "golden"])
    kind = rng.randrange(6)
    if kind == 0:
        extra = sparse_member(name, rng.choice([1 << 20, 1 << 30, 1 << 40]))
    else:
        info = tarfile.TarInfo(name)
        info.type = [tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.DIRTYPE, tarfile.REGTYPE][kind - 1]
        info.linkname = "manifest.json" if kind < 3 else ""
        payload = rng.randbytes(rng.choice([0, 10, 600])) if info.type == tarfile.REGTYPE else None
        if payload is not None:
            info.size = len(payload)
        extra = _tar_bytes([(info, payload)])[:-1024]
    return data[:end] + extra + bytes(1024)


# --------------------------------------------------------------------------------------- seeds
def bundle_seed_dir(tmp: Path) -> Path:
    """A small real bundle: one variant, a golden set, written by BundleWriter."""
    from edge_sdk.bundle import (
        AccuracyReport,
        BundleWriter,
        FitReport,
        Metric,
        Recipe,
        RuntimeRequirement,
        SourceInfo,
    )
    from edge_sdk.types import Backend, DType, QuantScheme, Task, TensorSpec

    rng = np.random.default_rng(7)
    model = tmp / "model.onnx"
    model.write_bytes(rng.bytes(700))
    writer = BundleWriter(
        name="fuzz-net",
        version="1.0.0",
        task=Task.CLASSIFICATION,
        source=SourceInfo(kind="synthetic", digest=hashlib.sha256(b"fuzz").hexdigest()),
        created_by="tests/fuzz",
    )
    golden_in, golden_out = {"input": np.ones((2, 3), np.float32)}, {"output": np.zeros((2, 2), np.float32)}
    writer.set_golden(golden_in, golden_out, np.array([0, 1]))
    metric = Metric(name="accuracy", value=0.9, reference=0.91, tolerance=0.02, higher_is_better=True, passed=True)
    writer.add_variant(
        variant_id="onnx-fp32",
        backend=Backend.ONNX,
        files={"model.onnx": model},
        inputs=(TensorSpec(name="input", dtype=DType.FLOAT32, shape=("batch", 3)),),
        outputs=(TensorSpec(name="output", dtype=DType.FLOAT32, shape=("batch", 2)),),
        recipe=Recipe(quantization=QuantScheme.NONE, precision="fp32", options={"k": "v"}),
        runtime=RuntimeRequirement(package="onnxruntime", version="1.31.1", extra="onnx"),
        accuracy=AccuracyReport(reference="fp32", samples=2, metrics=(metric,), passed=True),
        fit={"rpi5": FitReport(profile="rpi5", fits=True, estimated_peak_bytes=1 << 20, budget_bytes=1 << 30)},
        golden_outputs={"output": np.zeros((2, 2), np.float32)},
    )
    return writer.write(tmp / "bundle").root


def signature_seeds(bundle: Path, tmp: Path) -> list[bytes]:
    from edge_sdk.bundle.bundle import Bundle
    from edge_sdk.bundle.signing import generate_keypair, sign_manifest

    generate_keypair(tmp / "k")
    sig = sign_manifest(Bundle.open(bundle).manifest, tmp / "k")
    return [json.dumps(sig, indent=2).encode(), json.dumps(sig).encode()]


def gguf_seeds(tmp: Path) -> list[bytes]:
    """Two tiny GGUF files written by gguf-py: every value type, string and nested arrays, two tensors."""
    import gguf

    seeds = []
    for i, arch in enumerate(["llama", "qwen2"]):
        path = tmp / f"seed{i}.gguf"
        w = gguf.GGUFWriter(path, arch)
        w.add_block_count(2)
        w.add_context_length(128)
        w.add_embedding_length(8)
        w.add_head_count(2)
        w.add_head_count_kv(1)
        w.add_uint8("t.u8", 1)
        w.add_int16("t.i16", -3)
        w.add_float64("t.f64", 0.5)
        w.add_bool("t.bool", True)
        w.add_int64("t.i64", -(2**40))
        w.add_array("tokenizer.ggml.tokens", ["<s>", "a", "bc", "é"])
        w.add_array("t.ints", [1, 2, 3])
        w.add_array("t.nested", [[1, 2], [3]])
        w.add_tensor("token_embd.weight", np.arange(32, dtype=np.float32).reshape(4, 8))
        w.add_tensor("output_norm.weight", np.ones(8, dtype=np.float16))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        seeds.append(path.read_bytes())
    return seeds


# --------------------------------------------------------------------------------------- targets
@dataclass
class Reader:
    name: str
    target: Callable[[bytes], object]
    seeds: list[bytes]
    mutators: list[Mutator]


def readers(workdir: Path) -> dict[str, Reader]:
    """The five readers of untrusted bytes, each with its seeds; files they need live under `workdir`."""
    from converters.gguf.gguf_source import check_header, model_from_reader, read_gguf
    from device_profiles.gguf_header import parse_gguf_header
    from edge_sdk.bundle.bundle import Bundle
    from edge_sdk.bundle.manifest import parse_manifest
    from edge_sdk.bundle.signing import parse_signature

    seeds_dir = workdir / "seeds"
    seeds_dir.mkdir(parents=True, exist_ok=True)
    bundle = bundle_seed_dir(seeds_dir)
    manifest = (bundle / "manifest.json").read_bytes()
    archive = Bundle.open(bundle).pack(seeds_dir / "seed.edgebundle").read_bytes()
    gguf = gguf_seeds(seeds_dir)
    scratch = workdir / "scratch"
    scratch.mkdir(exist_ok=True)
    unpack_tmp = workdir / "unpack"
    unpack_tmp.mkdir(exist_ok=True)

    def open_archive(data: bytes) -> None:
        path = scratch / "input.edgebundle"
        path.write_bytes(data)
        tempfile.tempdir = str(unpack_tmp)  # Bundle.open extracts under the system temp dir: keep it here
        try:
            Bundle.open(path)
        finally:
            tempfile.tempdir = None
            for left in unpack_tmp.iterdir():  # a bundle that verified stays until its object is collected
                shutil.rmtree(left, ignore_errors=True)

    def gguf_header(data: bytes) -> None:
        parse_gguf_header(io.BytesIO(data), len(data), "fuzz.gguf")

    def gguf_source(data: bytes) -> None:
        path = scratch / "input.gguf"
        path.write_bytes(data)
        check_header(path)
        reader = read_gguf(path)
        model_from_reader(reader)
        del reader

    json_mutators = [json_node, json_node, json_node, *GENERIC]
    return {
        "manifest": Reader("manifest", parse_manifest, [manifest], json_mutators),
        "signature": Reader("signature", parse_signature, signature_seeds(bundle, seeds_dir), json_mutators),
        "archive": Reader("archive", open_archive, [archive], [tar_header, tar_header, tar_members, *GENERIC]),
        "gguf_header": Reader("gguf_header", gguf_header, gguf, [set_int, set_int, *GENERIC]),
        "gguf_source": Reader("gguf_source", gguf_source, gguf, [set_int, set_int, *GENERIC]),
    }


# --------------------------------------------------------------------------------------- the loop
@dataclass
class Finding:
    index: int
    kind: str  # "exception" or "hang"
    error: str
    data: bytes


@dataclass
class Report:
    reader: str
    inputs: int = 0
    refused: int = 0  # EdgeSDKError: the clean refusal
    accepted: int = 0
    slowest_s: float = 0.0
    findings: list[Finding] = field(default_factory=list)


def mutate(rng: random.Random, reader: Reader) -> bytes:
    data = rng.choice(reader.seeds)
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        data = rng.choice(reader.mutators)(rng, data, reader.seeds)
    return data


def _alarm(_signum: int, _frame: object) -> None:
    raise Hang


def fuzz(reader: Reader, *, count: int, seed: int, hang_s: float = 5.0, keep: int = 20) -> Report:
    """Run `count` mutated inputs through the reader; anything but success or an EdgeSDKError is a finding."""
    rng = random.Random(f"{reader.name}:{seed}")
    report = Report(reader.name)
    previous = signal.signal(signal.SIGALRM, _alarm)
    try:
        for index in range(count):
            data = mutate(rng, reader)
            start = time.perf_counter()
            signal.setitimer(signal.ITIMER_REAL, hang_s)
            try:
                reader.target(data)
                report.accepted += 1
            except EdgeSDKError:
                report.refused += 1
            except Hang:
                report.findings.append(Finding(index, "hang", f"no answer within {hang_s} s", data))
            except Exception as exc:  # the point: anything not ours is a finding
                report.findings.append(Finding(index, "exception", f"{type(exc).__name__}: {exc}"[:300], data))
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            report.slowest_s = max(report.slowest_s, time.perf_counter() - start)
            report.inputs += 1
            if len(report.findings) >= keep:
                break
    finally:
        signal.signal(signal.SIGALRM, previous)
    return report


def describe(findings: list[Finding]) -> str:
    return "\n".join(f"  #{f.index} {f.kind}: {f.error} ({len(f.data)} bytes: {f.data[:60]!r}…)" for f in findings)
