"""Tiny random-weight decoder LLMs of every family the GGUF converter claims, and llama.cpp's reference converter.

Each model is built from transformers' own config class (hidden 64, 2 layers; no download) with SmolLM2's real
byte-level BPE tokenizer (Gemma 2 needs SentencePiece: one is trained here on stdlib docstrings). The reference
converter is `convert_hf_to_gguf.py` + `gguf-py` of the llama.cpp revision llama-cpp-python 0.3.36 vendors, taken
from that sdist (downloaded once into ~/.cache/edge-sdk) and run as it is, in one subprocess for all models.
"""

from __future__ import annotations

import atexit
import functools
import inspect
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LLAMA_CPP_PYTHON = "0.3.36"
CACHE = Path(os.environ.get("EDGE_SDK_CACHE", Path.home() / ".cache" / "edge-sdk"))
SMALL = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2, "max_position_embeddings": 512, "initializer_range": 0.2,
         "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": None}  # fmt: skip


def reference_converter() -> Path:
    """The llama.cpp directory holding convert_hf_to_gguf.py, conversion/ and gguf-py from the pinned sdist."""
    root = CACHE / f"llama-cpp-python-{LLAMA_CPP_PYTHON}-sdist"
    vendored = root / f"llama_cpp_python-{LLAMA_CPP_PYTHON}" / "vendor" / "llama.cpp"
    if (vendored / "convert_hf_to_gguf.py").is_file():
        return vendored
    root.mkdir(parents=True, exist_ok=True)
    archive = root / f"llama_cpp_python-{LLAMA_CPP_PYTHON}.tar.gz"
    if not archive.is_file():
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
             f"llama-cpp-python=={LLAMA_CPP_PYTHON}", "-d", str(root)],
            check=True,
        )  # fmt: skip
    prefix = f"llama_cpp_python-{LLAMA_CPP_PYTHON}/vendor/llama.cpp/"
    wanted = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/")
    with tarfile.open(archive) as tar:
        members = [
            m for m in tar.getmembers() if m.name.startswith(prefix) and m.name[len(prefix) :].startswith(wanted)
        ]
        tar.extractall(root, members=members, filter="data")
    return vendored


# One process converts every (model dir, outtype, outfile): torch and the converter are imported once.
_DRIVER = textwrap.dedent(
    """
    import json, sys
    import transformers.models.auto.tokenization_auto as auto
    # transformers 5.23 swaps its own tokenizer class in for these model types, whatever tokenizer.json says,
    # and the converter would hash that class's pre-tokenizer: let it read the file as shipped.
    auto.MODELS_WITH_INCORRECT_HUB_TOKENIZER_CLASS -= {"qwen2", "phi3"}
    sys.argv = ["convert_hf_to_gguf.py"]
    import convert_hf_to_gguf as ref
    for directory, outtype, outfile in json.loads(sys.stdin.read()):
        sys.argv = ["convert_hf_to_gguf.py", directory, "--outtype", outtype, "--outfile", outfile]
        ref.main()
    """
)


def run_reference(jobs: list[tuple[Path, str, Path]]) -> None:
    """Run llama.cpp's converter on each (HF directory, outtype, output file)."""
    llama_cpp_dir = reference_converter()
    env = {**os.environ, "PYTHONPATH": f"{llama_cpp_dir}{os.pathsep}{llama_cpp_dir / 'gguf-py'}"}
    payload = json.dumps([[str(d), t, str(o)] for d, t, o in jobs])
    done = subprocess.run([sys.executable, "-c", _DRIVER], input=payload, env=env, cwd=llama_cpp_dir,
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"llama.cpp's reference converter failed:\n{done.stderr[-4000:]}")


@functools.cache
def smollm2_tokenizer_dir() -> Path:
    """SmolLM2's tokenizer files, written once per test run (loading them from the GGUF takes ~10 s)."""
    dest = Path(tempfile.mkdtemp(prefix="edge-smollm2-tokenizer-"))
    atexit.register(shutil.rmtree, dest, ignore_errors=True)
    smollm2_tokenizer(dest)
    return dest


def smollm2_tokenizer(dest: Path) -> Any:
    """SmolLM2's real tokenizer (from the embedded GGUF), saved as tokenizer.json + tokenizer_config.json."""
    from transformers import AutoTokenizer

    from converters.gguf.zoo import smollm2_gguf_path

    path = smollm2_gguf_path()
    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    tok.save_pretrained(dest)
    return tok


def sentencepiece_tokenizer(dest: Path) -> None:
    """A 512-piece SentencePiece BPE with byte fallback, trained on stdlib docstrings (for Gemma 2)."""
    import io

    import sentencepiece as spm

    text = [line for m in (json, textwrap, inspect) for line in (inspect.getdoc(m) or "").splitlines() if line]
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(text), model_writer=buf, vocab_size=512, model_type="bpe", byte_fallback=True,
        hard_vocab_limit=False, minloglevel=2, character_coverage=1.0, bos_id=1, eos_id=2, unk_id=3, pad_id=0,
        remove_extra_whitespaces=False, normalization_rule_name="identity",
    )  # fmt: skip
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "tokenizer.model").write_bytes(buf.getvalue())
    config = {"tokenizer_class": "GemmaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "add_bos_token": True}
    (dest / "tokenizer_config.json").write_text(json.dumps(config))


@dataclass(frozen=True)
class Family:
    name: str
    config_class: str  # a transformers config class
    model_class: str
    overrides: dict[str, Any]
    tokenizer: str = "smollm2"  # or "sentencepiece"
    tokenizer_class: str | None = None  # written into tokenizer_config.json


def _factors(n: int, low: float, high: float) -> list[float]:
    """Per-dimension rope factors rising from `low` to `high`, as long-context checkpoints ship them."""
    return [round(low + (high - low) * i / max(1, n - 1), 4) for i in range(n)]


# llama.cpp picks the long factors when its context (padded to 256) exceeds the original one, transformers when the
# sequence does: with the original context at the full 512 both run the short factors on the tests' sequences, and
# the long ones are checked byte for byte against the reference converter.
PHI3_LONG = {"tie_word_embeddings": False, "original_max_position_embeddings": 512,
             "rope_parameters": {"rope_type": "longrope", "rope_theta": 10000.0, "long_factor": _factors(8, 1.0, 8.0),
                                 "short_factor": _factors(8, 1.0, 1.5)}}  # fmt: skip
PHI4_MINI = {"tie_word_embeddings": True, "original_max_position_embeddings": 512,
             "rope_parameters": {"rope_type": "longrope", "rope_theta": 10000.0, "partial_rotary_factor": 0.75,
                                 "long_factor": _factors(6, 1.0, 8.0),
                                 "short_factor": _factors(6, 1.0, 1.2)}}  # fmt: skip

FAMILIES = (
    Family("llama", "LlamaConfig", "LlamaForCausalLM", {"tie_word_embeddings": True}),
    Family(
        "llama3",
        "LlamaConfig",
        "LlamaForCausalLM",
        {
            "tie_word_embeddings": True,
            "rope_parameters": {
                "rope_type": "llama3",
                "rope_theta": 500000.0,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 64,
            },
        },
    ),
    Family("mistral", "MistralConfig", "MistralForCausalLM", {"tie_word_embeddings": False, "sliding_window": None}),
    Family(
        "qwen2",
        "Qwen2Config",
        "Qwen2ForCausalLM",
        {"tie_word_embeddings": True},
        tokenizer_class="PreTrainedTokenizerFast",
    ),
    Family("qwen3", "Qwen3Config", "Qwen3ForCausalLM", {"tie_word_embeddings": True, "head_dim": 16}),
    Family(
        "gemma2",
        "Gemma2Config",
        "Gemma2ForCausalLM",
        {"head_dim": 16, "query_pre_attn_scalar": 16, "initializer_range": 0.02},
        tokenizer="sentencepiece",
    ),  # Gemma scales embeddings by sqrt(hidden)
    # llama.cpp scales Gemma 3 attention by 1/sqrt(head_dim): a tiny config must say the same
    Family(
        "gemma3",
        "Gemma3TextConfig",
        "Gemma3ForCausalLM",
        {"head_dim": 16, "query_pre_attn_scalar": 16, "initializer_range": 0.02},
    ),
    Family("phi3", "Phi3Config", "Phi3ForCausalLM", {"tie_word_embeddings": True}, tokenizer_class="GPT2Tokenizer"),
    # Phi-3 long context (128k): 'longrope' factors, one per rotated dimension pair (PHI3_LONG)
    Family("phi3long", "Phi3Config", "Phi3ForCausalLM", PHI3_LONG, tokenizer_class="GPT2Tokenizer"),
    # Phi-4-mini: Phi3ForCausalLM rotating 3/4 of each head, tied embeddings, long-context factors
    Family("phi4_mini", "Phi3Config", "Phi3ForCausalLM", PHI4_MINI, tokenizer_class="GPT2Tokenizer"),
    Family("smollm3", "SmolLM3Config", "SmolLM3ForCausalLM", {"tie_word_embeddings": True}),
)


def build_family(
    family: Family, dest: Path, tokenizer_dir: dict[str, Path], seed: int = 0, *, decisive: bool = False
) -> Any:
    """Save a tiny random-weight model of `family` with its tokenizer into `dest`; returns the torch model.
    `decisive`: with a trained model's confident predictions (make_decisive), for quality gates."""
    import torch
    import transformers

    shutil.copytree(tokenizer_dir[family.tokenizer], dest)
    if family.tokenizer_class is not None:
        tok_config_path = dest / "tokenizer_config.json"
        tok_config = json.loads(tok_config_path.read_text())
        tok_config["tokenizer_class"] = family.tokenizer_class
        tok_config_path.write_text(json.dumps(tok_config))
    vocab = 512 if family.tokenizer == "sentencepiece" else 49152
    config_class: Callable[..., Any] = getattr(transformers, family.config_class)
    config = config_class(vocab_size=vocab, **{**SMALL, **family.overrides})
    torch.manual_seed(seed)
    model = getattr(transformers, family.model_class)(config).eval()
    if decisive:
        make_decisive(model)
    model.save_pretrained(dest)
    return model


def make_decisive(model: Any) -> None:
    """Give a random model a trained model's decisive next-token distribution.

    With every weight at `initializer_range` 0.2 the blocks' outputs swamp the residual stream and the logits are
    Gaussian over 49k tokens: the top two sit a fifth of a standard deviation apart, so rounding any weight flips
    top-1 (a q4_k_m "agrees" on 53 % of positions) however faithful the file is. Here the blocks are at
    transformers' default 0.02 and the (tied) embedding at 0.2: the residual stream is mostly the token's own
    embedding, whose logit leads the others by ~sqrt(hidden) of their standard deviations (8 at hidden 64), so
    the prediction is clear, as a trained model's is. It is easier to quantize than a trained model: it shows
    the command works and the gate is applied, not that the gate is tight (README, "Random weights").
    """
    import torch

    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.normal_(0.0, 0.02)
        embedding = model.get_input_embeddings().weight
        embedding.normal_(0.0, 0.2)
        head = model.get_output_embeddings()
        if head is not None and head.weight.data_ptr() != embedding.data_ptr():
            head.weight.copy_(embedding)  # an untied head predicts the same way


def build_gpt2(dest: Path, tokenizer_dir: Path, seed: int = 0) -> Any:
    """A tiny GPT-2: an architecture llama.cpp runs that the converter does not re-quantize (for `-q as-is`)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    shutil.copytree(tokenizer_dir, dest)
    config = GPT2Config(vocab_size=49152, n_embd=64, n_layer=2, n_head=4, n_positions=512, n_ctx=512, bos_token_id=1,
                        eos_token_id=2)  # fmt: skip
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config).eval()
    model.save_pretrained(dest)
    return model
