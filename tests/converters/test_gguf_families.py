"""Every decoder family the GGUF converter claims, on tiny random-weight models built from transformers' configs.

Per family: our f32/f16/q8_0 GGUFs equal llama.cpp's own converter's (same llama.cpp revision as the runtime) in
tensor names, shapes, types and bytes, and in metadata except the naming keys; llama.cpp's 16 greedy tokens on
the f32 file equal transformers' fp32 greedy tokens; f16 and q8_0 are judged by teacher-forced top-1 agreement
with transformers running the same rounded weights (random weights leave near-ties, so exact greedy sequences
would test luck, not the file), against the bundle's own gate for that type.
"""

from __future__ import annotations

import itertools
import struct
from pathlib import Path

import numpy as np
import pytest
from llm_families import (
    FAMILIES,
    build_family,
    build_gpt2,
    run_reference,
    sentencepiece_tokenizer,
    smollm2_tokenizer_dir,
)

pytest.importorskip("llama_cpp")
NAMING_KEYS = {"general.name", "general.basename", "general.size_label", "general.type"}
TYPES = ("f32", "f16", "q8_0")
REFERENCE_TYPES = ("f16", "q8_0")  # f32 too would add ~30 s; its tensors are f16's before rounding
NAMES = [f.name for f in FAMILIES]
PROMPT = [1, 504, 3458, 282, 4649, 314, 9, 52]
SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}  # GGUF value type -> bytes


@pytest.fixture(scope="module")
def families(tmp_path_factory) -> dict[str, tuple[Path, object]]:
    """name -> (HF directory, the torch model), each built once for this module."""
    root = tmp_path_factory.mktemp("families")
    sentencepiece_tokenizer(root / "spm")
    tokenizers = {"smollm2": smollm2_tokenizer_dir(), "sentencepiece": root / "spm"}
    # not "tiny-phi3": the directory names the model, and llama.cpp treats a "phi3" name as Phi-3's own vocabulary
    dirs = {f.name: root / f"tiny-{f.name.replace('phi3', 'phi-mini').replace('_', '-')}" for f in FAMILIES}
    return {f.name: (dirs[f.name], build_family(f, dirs[f.name], tokenizers)) for f in FAMILIES}


@pytest.fixture(scope="module")
def ours(families, tmp_path_factory) -> dict[tuple[str, str], Path]:
    from converters.gguf.hf_source import HfSource
    from converters.gguf.writer import parse_gguf_quant, write_gguf

    out = tmp_path_factory.mktemp("ours")
    files = {}
    for name, (directory, _) in families.items():
        model = HfSource(directory).load()
        for t in TYPES:
            files[name, t] = write_gguf(model, out / f"{name}-{t}.gguf", parse_gguf_quant(t))
    return files


@pytest.fixture(scope="module")
def reference(families, tmp_path_factory) -> dict[tuple[str, str], Path]:
    out = tmp_path_factory.mktemp("reference")
    paths = {(name, t): out / f"{name}-{t}.gguf" for name in families for t in REFERENCE_TYPES}
    jobs = [(families[name][0], t, path) for (name, t), path in paths.items()]
    gpt2_dir = out / "tiny-gpt2"
    build_gpt2(gpt2_dir, smollm2_tokenizer_dir())
    paths["gpt2", "q8_0"] = out / "gpt2-q8_0.gguf"  # an architecture we bundle only as it is
    run_reference([*jobs, (gpt2_dir, "q8_0", paths["gpt2", "q8_0"])])  # one process: ~30 s
    return paths


def _read(path: Path) -> tuple[dict[str, bytes], dict[str, tuple[int, tuple[int, ...], bytes]]]:
    """Every metadata value as its raw bytes (type code included) and every tensor's type, shape and bytes.

    A plain parser: gguf's reader builds an array per vocabulary entry and takes seconds a file.
    """
    data = path.read_bytes()
    pos = 24
    n_tensors, n_kv = struct.unpack_from("<QQ", data, 8)

    def string() -> str:
        nonlocal pos
        (n,) = struct.unpack_from("<Q", data, pos)
        pos += 8 + n
        return data[pos - n : pos].decode()

    def skip(kind: int) -> None:
        nonlocal pos
        if kind == 8:
            string()
        elif kind == 9:
            item, count = struct.unpack_from("<IQ", data, pos)
            pos += 12
            if item in SCALAR_SIZES:
                pos += count * SCALAR_SIZES[item]
            else:
                for _ in range(count):
                    skip(item)
        else:
            pos += SCALAR_SIZES[kind]

    keys = {}
    for _ in range(n_kv):
        key = string()
        start = pos
        (kind,) = struct.unpack_from("<I", data, pos)
        pos += 4
        skip(kind)
        if key not in NAMING_KEYS:
            keys[key] = data[start:pos]
    infos = []
    for _ in range(n_tensors):
        name = string()
        (n_dims,) = struct.unpack_from("<I", data, pos)
        dims = struct.unpack_from(f"<{n_dims}Q", data, pos + 4)
        kind, offset = struct.unpack_from("<IQ", data, pos + 4 + 8 * n_dims)
        pos += 4 + 8 * n_dims + 12
        infos.append((name, kind, tuple(dims), offset))
    base = (pos + 31) // 32 * 32  # general.alignment is the default 32 in both writers
    starts = [*sorted(offset for *_, offset in infos), len(data) - base]
    end_of = dict(itertools.pairwise(starts))  # each tensor runs to the next (padding is zeros in both)
    tensors = {name: (kind, dims, data[base + offset : base + end_of[offset]]) for name, kind, dims, offset in infos}
    return keys, tensors


def test_each_family_is_small(families):
    for name, (directory, _) in families.items():
        size = sum(p.stat().st_size for p in directory.iterdir())
        assert size < 30e6, (name, size)


@pytest.mark.slow
@pytest.mark.parametrize("gguf_type", REFERENCE_TYPES)
@pytest.mark.parametrize("family", NAMES)
def test_gguf_equals_llama_cpp_reference_converter(ours, reference, family, gguf_type):
    our_keys, our_tensors = _read(ours[family, gguf_type])
    ref_keys, ref_tensors = _read(reference[family, gguf_type])
    assert our_keys.keys() == ref_keys.keys()
    assert {k: v for k, v in our_keys.items() if v != ref_keys[k]} == {}
    assert our_tensors.keys() == ref_tensors.keys()
    for name, (kind, shape, data) in ref_tensors.items():
        assert our_tensors[name][:2] == (kind, shape), name
        assert our_tensors[name][2] == data, f"{name}: bytes differ"


def _llama(path: Path, n_ctx: int = 64):
    import llama_cpp

    from runtimes.llama_cpp_quiet import quiet_stderr

    with quiet_stderr():
        return llama_cpp.Llama(str(path), n_ctx=n_ctx, n_threads=2, logits_all=True, verbose=False)


@pytest.mark.slow
@pytest.mark.parametrize("family", NAMES)
def test_f32_greedy_tokens_equal_transformers(families, ours, family):
    import torch

    model = families[family][1]
    prompt = [t % 512 for t in PROMPT] if family == "gemma2" else PROMPT  # its SentencePiece vocabulary is small
    want: list[int] = []
    with torch.no_grad():  # greedy by hand: generate() would stop at an end-of-sequence token
        for _ in range(16):
            logits = model(torch.tensor([prompt + want])).logits[0, -1]
            want.append(int(logits.argmax()))
    llm = _llama(ours[family, "f32"])
    llm.eval(prompt)
    got = []
    for _ in range(16):
        got.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
        llm.eval([got[-1]])
    assert got == want
    assert len(set(want)) > 1 or family == "gemma2", "a degenerate model would not test the graph"


def _eager_quantized(model, gguf_type: str):
    """The transformers model with its matrices rounded as the GGUF stores them (the eager quantized model)."""
    import copy

    import gguf
    import torch

    qtype = gguf.GGMLQuantizationType.F16 if gguf_type == "f16" else gguf.GGMLQuantizationType.Q8_0
    rounded = copy.deepcopy(model)
    with torch.no_grad():
        for p in rounded.parameters():
            if p.ndim == 2:  # norms and biases stay float32 in the GGUF
                w = p.numpy()
                stored = gguf.quants.dequantize(gguf.quants.quantize(w, qtype), qtype)
                p.copy_(torch.from_numpy(stored.reshape(w.shape)))
    return rounded


@pytest.mark.slow
@pytest.mark.parametrize("gguf_type", ["f16", "q8_0"])
@pytest.mark.parametrize("family", NAMES)
def test_teacher_forced_top1_agreement_with_transformers(families, ours, family, gguf_type):
    import torch

    vocab = 512 if family == "gemma2" else 49152
    from converters.gguf.quality import tolerance_for
    from converters.gguf.writer import parse_gguf_quant

    tokens = np.random.default_rng(0).integers(3, vocab, size=256).tolist()
    model = _eager_quantized(families[family][1], gguf_type)
    with torch.no_grad():
        want = model(torch.tensor([tokens])).logits[0].numpy()
    llm = _llama(ours[family, gguf_type], n_ctx=288)
    llm.eval(tokens)
    got = np.asarray(llm.scores[: len(tokens)])
    agreement = float((got.argmax(-1) == want.argmax(-1)).mean())
    # the bundle's own gate for this type (llama.cpp's published quality ladder), not this model's number
    assert agreement >= 1 - tolerance_for(parse_gguf_quant(gguf_type)).max_top1_drop, agreement


def test_a_phi3_name_without_phi3_tokens_is_refused_before_llama_cpp_crashes(families, tmp_path):
    import shutil

    from converters.gguf.hf_source import HfSource
    from edge_sdk.errors import ModelSourceError

    directory = shutil.copytree(families["phi3"][0], tmp_path / "my-phi3")
    with pytest.raises(ModelSourceError, match=r"named 'my-phi3' as Phi-3 and needs the tokens \['</s>'"):
        HfSource(directory)


# Any GGUF llama.cpp loads: re-quantized by llama.cpp's own quantizer, or bundled as it is with `-q as-is`.


def _set_file_type(path: Path, file_type: int) -> None:
    """Rewrite general.file_type (a uint32) in place: the tensors stay what they are."""
    data = bytearray(path.read_bytes())
    key = b"general.file_type"
    at = data.index(struct.pack("<Q", len(key)) + key) + 8 + len(key)
    assert struct.unpack_from("<I", data, at)[0] == 4  # GGUF uint32
    struct.pack_into("<I", data, at + 4, file_type)
    path.write_bytes(bytes(data))


def test_an_architecture_llama_cpp_does_not_know_is_refused_from_the_header(tmp_path):
    import gguf

    path = tmp_path / "strange.gguf"
    writer = gguf.GGUFWriter(path, "gpt7")
    writer.add_tensor("token_embd.weight", np.zeros((64, 32), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    path.write_bytes(path.read_bytes()[:-4096])  # its weights cut short: only the header may be read
    result = _convert(str(path), "-b", "gguf", "-q", "q4_k_m", "-o", str(tmp_path / "b"))
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "'gpt7' GGUF: the llama.cpp here (0c1e57098) knows no such architecture" in result.output
    assert not (tmp_path / "b").exists()


@pytest.mark.slow  # takes the reference converter (downloaded once)
def test_llama_cpps_architectures_are_data_from_its_revision():
    import re

    from llm_families import reference_converter

    from converters.gguf.requantize import llama_cpp_architectures

    constants = (reference_converter() / "gguf-py" / "gguf" / "constants.py").read_text()
    table = re.search(r"MODEL_ARCH_NAMES: dict\[MODEL_ARCH, str\] = \{(.*?)\n\}", constants, re.S)
    assert table is not None
    revision, known = llama_cpp_architectures()
    assert revision == "0c1e57098" and known == set(re.findall(r':\s*"([^"]+)"', table.group(1)))


@pytest.mark.slow
def test_any_architecture_is_requantized_by_llama_cpp_with_a_warning_and_its_measured_kl(reference, tmp_path):
    import edge_sdk
    from converters.gguf.quality import tolerance_for
    from device_profiles.gguf_header import read_gguf_header
    from edge_sdk.types import QuantScheme

    source = reference["gpt2", "q8_0"]  # an architecture our writer does not know
    result = _convert(str(source), "-b", "gguf", "-q", "q4_k_m,q4_0", "-o", str(tmp_path / "b"))
    assert result.exit_code == 0, result.output
    assert "already quantized (Q8_0)" in " ".join(result.output.split())
    bundle = edge_sdk.Bundle.open(tmp_path / "b")
    assert [v.id for v in bundle.variants] == ["gguf-q4-k-m", "gguf-q4-0"]
    expected = ((QuantScheme.Q4_K_M, 15), (QuantScheme.Q4_0, 2))  # with general.file_type
    for variant, (scheme, file_type) in zip(bundle.variants, expected, strict=True):
        options = variant.recipe.options
        assert (options["quantizer"], options["arch"], options["requantized_from"]) == ("llama.cpp", "gpt2", "q8_0")
        assert "loses more quality" in options["warning"]
        accuracy = variant.accuracy
        assert accuracy is not None and accuracy.passed
        assert "gpt2-q8_0.gguf (gpt2) as it is (q8_0)" in accuracy.reference
        kl = accuracy.metric("mean_kl")
        assert kl is not None and 0 < kl.value <= tolerance_for(scheme).max_kl  # measured, against the source file
        path = bundle.root / variant.files[0].path
        assert read_gguf_header(path)["general.file_type"] == file_type and path.stat().st_size < source.stat().st_size
        assert edge_sdk.check_golden(bundle, variant.id).passed


@pytest.mark.slow
def test_a_gguf_whose_file_type_we_do_not_name_is_bundled_as_gguf_as_is(ours, tmp_path):
    import shutil

    import edge_sdk

    source = shutil.copy(ours["qwen3", "f16"], tmp_path / "odd.gguf")
    _set_file_type(source, 38)  # a type llama.cpp has (MXFP4) and our table does not name
    bundle = edge_sdk.convert_llm(source, quantize="as-is", output=tmp_path / "b")
    (variant,) = bundle.variants
    assert variant.id == "gguf-as-is" and variant.recipe.precision == "llama.cpp file type 38"
    assert edge_sdk.check_golden(bundle, variant.id).passed


@pytest.mark.slow
def test_as_is_bundles_any_gguf_llama_cpp_loads_with_golden_set_and_fit(reference, tmp_path):
    from typer.testing import CliRunner

    import edge_sdk
    from edge_sdk.apps.cli.main import app

    source = reference["gpt2", "q8_0"]
    result = CliRunner().invoke(app, ["convert", str(source), "-b", "gguf", "-q", "as-is", "-p", "rpi4",
                                      "-o", str(tmp_path / "b")])  # fmt: skip
    assert result.exit_code == 0, result.output
    bundle = edge_sdk.Bundle.open(tmp_path / "b")
    (variant,) = bundle.variants
    assert variant.id == "gguf-q8-0" and variant.recipe.options == {"quantizer": "as-is", "arch": "gpt2"}
    assert (bundle.root / variant.files[0].path).read_bytes() == source.read_bytes()
    assert variant.fit["rpi4"].fits
    assert edge_sdk.check_golden(bundle, variant.id).passed
    with edge_sdk.load(bundle) as session:
        assert len(list(session.generate("The", max_tokens=4, temperature=0))) >= 1


def test_as_is_cannot_be_mixed_with_quantizations():
    from converters.gguf.as_is import wants_as_is
    from edge_sdk.errors import ConfigError

    assert wants_as_is("as-is") and wants_as_is(["AS-IS"]) and not wants_as_is("q8_0,q4_0")
    with pytest.raises(ConfigError, match="cannot be combined"):
        wants_as_is("as-is,q4_0")


@pytest.mark.parametrize(
    ("body", "what"),
    [
        (struct.pack("<QQ", 0, 1) + struct.pack("<Q", 2**60), "a string claims"),  # a key 2**60 bytes long
        (struct.pack("<QQ", 0, 1) + struct.pack("<Q", 1) + b"k" + struct.pack("<IIQ", 9, 4, 2**59), "an array claims"),
    ],
)
def test_absurd_string_and_array_lengths_are_refused_from_the_header(tmp_path, body, what):
    from converters.gguf.gguf_source import GgufFileSource
    from edge_sdk.errors import ModelSourceError

    path = tmp_path / "hostile.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<I", 3) + body + b"\0" * 64)
    with pytest.raises(ModelSourceError, match=what):
        GgufFileSource(path)


def test_a_bpe_tokenizer_llama_cpp_does_not_know_is_refused_by_its_hash(families, tmp_path):
    import shutil

    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from converters.gguf.hf_source import HfSource
    from edge_sdk.errors import ModelSourceError

    directory = shutil.copytree(families["qwen3"][0], tmp_path / "custom-vocab")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(["a tiny corpus of words"] * 4, trainers.BpeTrainer(vocab_size=300))
    tok.save(str(directory / "tokenizer.json"))
    with pytest.raises(ModelSourceError, match=r"pre-tokenizer .* \(hash [0-9a-f]{16}…\) is not one llama.cpp 0c1e"):
        HfSource(directory)


def test_known_pre_tokenizer_hashes_are_data_with_their_llama_cpp_revision():
    import json

    from converters.gguf.tokenizer import HASHES_FILE, pre_tokenizer_name

    data = json.loads(HASHES_FILE.read_text())
    assert data["llama_cpp_revision"] == "0c1e57098" and len(data["hashes"]) > 90
    assert pre_tokenizer_name(smollm2_tokenizer_dir() / "tokenizer.json") == "smollm"


# --chat-template FILE: at convert time (into the GGUF, or beside a file bundled as it is) and at serve time.

TEMPLATE = "{% for m in messages %}<<{{ m['role'] }}|{{ m['content'] }}>>{% endfor %}{{ bos_token }}"
ESCAPE = "{{ messages.__class__.__mro__[1].__subclasses__() }}"


def _convert(*args: str):
    from typer.testing import CliRunner

    from edge_sdk.apps.cli.main import app

    return CliRunner().invoke(app, ["convert", *args])


@pytest.mark.slow
def test_a_gguf_without_a_chat_template_chats_with_one_given_at_convert_time(ours, tmp_path):
    import edge_sdk
    from edge_sdk.errors import UnsupportedOperationError

    source = ours["gemma2", "f16"]  # a SentencePiece model whose tokenizer_config has no template
    plain = _convert(str(source), "-b", "gguf", "-q", "as-is", "-o", str(tmp_path / "plain"))
    assert plain.exit_code == 0, plain.output
    with edge_sdk.load(tmp_path / "plain") as session, pytest.raises(UnsupportedOperationError, match="--chat-t"):
        session.render_chat([{"role": "user", "content": "hi"}])
    (tmp_path / "t.jinja").write_text(TEMPLATE)
    given = _convert(str(source), "-b", "gguf", "-q", "as-is", "--chat-template", str(tmp_path / "t.jinja"),
                     "-o", str(tmp_path / "given"))  # fmt: skip
    assert given.exit_code == 0, given.output
    bundle = edge_sdk.Bundle.open(tmp_path / "given")
    assert sorted(f.path.rsplit("/", 1)[-1] for f in bundle.variants[0].files) == ["chat_template.jinja", "model.gguf"]
    with edge_sdk.load(bundle) as session:
        assert session.render_chat([{"role": "user", "content": "hi"}]) == "<<user|hi>><s>"
        assert len(list(session.chat([{"role": "user", "content": "hi"}], max_tokens=2, temperature=0))) >= 1


@pytest.mark.slow
def test_a_chat_template_given_for_a_hugging_face_model_is_written_into_the_gguf(families, tmp_path):
    import gguf

    import edge_sdk

    (tmp_path / "t.jinja").write_text(TEMPLATE)
    result = _convert(str(families["gemma2"][0]), "-b", "gguf", "-q", "f16", "--chat-template",
                      str(tmp_path / "t.jinja"), "-o", str(tmp_path / "b"))  # fmt: skip
    assert result.exit_code == 0, result.output
    bundle = edge_sdk.Bundle.open(tmp_path / "b")
    reader = gguf.GGUFReader(bundle.root / bundle.variants[0].files[0].path)
    assert reader.fields["tokenizer.chat_template"].contents() == TEMPLATE


def test_a_template_that_escapes_the_sandbox_is_refused_before_anything_is_written(families, tmp_path):
    (tmp_path / "evil.jinja").write_text(ESCAPE)
    result = _convert(str(families["gemma2"][0]), "-b", "gguf", "-q", "f16", "--chat-template",
                      str(tmp_path / "evil.jinja"), "-o", str(tmp_path / "b"))  # fmt: skip
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "sandbox forbids" in result.output and not (tmp_path / "b").exists()
    missing = _convert("zoo:smollm2", "-b", "gguf", "--chat-template", str(tmp_path / "nope.jinja"), "-o", "x")
    assert missing.exit_code == 1 and "does not exist" in missing.output


@pytest.mark.slow
def test_a_chat_template_given_at_serve_time_replaces_the_bundles(ours, tmp_path):
    from edge_sdk.apps.daemon.config import daemon_config
    from edge_sdk.bundle import Bundle
    from runtimes.base import SessionOptions
    from runtimes.llama_cpp_adapter import LlamaCppRuntime

    assert _convert(str(ours["qwen3", "q8_0"]), "-b", "gguf", "-q", "as-is", "-o", str(tmp_path / "b")).exit_code == 0
    bundle = Bundle.open(tmp_path / "b")
    config = daemon_config(chat_template=TEMPLATE)
    options = SessionOptions(context=config.context, chat_template=config.chat_template)
    with LlamaCppRuntime().load(bundle.variants[0], bundle.root, options) as session:
        assert session.render_chat([{"role": "user", "content": "hi"}]).startswith("<<user|hi>>")

    from typer.testing import CliRunner

    from edge_sdk.apps.cli.main import app

    (tmp_path / "evil.jinja").write_text(ESCAPE)
    served = CliRunner().invoke(app, ["serve", str(tmp_path / "b"), "--chat-template", str(tmp_path / "evil.jinja")])
    assert served.exit_code == 1 and "sandbox forbids" in served.output


# The user's command, end to end: `edge-sdk convert HF_DIR -b gguf -q f16,q8_0,q4_k_m`, one process per family.

END_TO_END = ("llama", "gemma2", "phi4_mini")  # byte-level BPE, SentencePiece, partial rotary + long rope


@pytest.mark.slow
@pytest.mark.parametrize("family", END_TO_END)
def test_the_cli_converts_each_family_to_f16_q8_0_q4_k_m_within_the_default_gate(family, tmp_path):
    import subprocess
    import sys

    import edge_sdk
    from converters.gguf.quality import tolerance_for
    from converters.gguf.writer import parse_gguf_quant

    spec = next(f for f in FAMILIES if f.name == family)
    tokenizers = {"smollm2": smollm2_tokenizer_dir(), "sentencepiece": tmp_path / "spm"}
    if spec.tokenizer == "sentencepiece":
        sentencepiece_tokenizer(tmp_path / "spm")
    directory = tmp_path / f"tiny-{family.replace('_', '-')}"
    build_family(spec, directory, tokenizers, decisive=True)  # a trained model's confidence: see make_decisive
    cli = Path(sys.executable).parent / "edge-sdk"
    done = subprocess.run([str(cli), "convert", str(directory), "-b", "gguf", "-q", "f16,q8_0,q4_k_m", "-p", "rpi4",
                           "-o", str(tmp_path / "b")], capture_output=True, text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    bundle = edge_sdk.Bundle.open(tmp_path / "b")
    assert [v.id for v in bundle.variants] == ["gguf-fp16", "gguf-q8-0", "gguf-q4-k-m"]
    for variant in bundle.variants:  # the default gate, from llama.cpp's published ladder, passed by each
        accuracy = variant.accuracy
        assert accuracy is not None and accuracy.passed, (variant.id, accuracy)
        kl = accuracy.metric("mean_kl")
        assert kl is not None and kl.value <= tolerance_for(parse_gguf_quant(variant.recipe.quantization)).max_kl
        assert variant.fit["rpi4"].fits
    sizes = [(bundle.root / v.files[0].path).stat().st_size for v in bundle.variants]
    assert sizes[0] > sizes[1] > sizes[2]
