"""GGUF variants whose tensors have mixed types: chosen per tensor by the user, read back from the file, recorded."""

from __future__ import annotations

import gguf
import pytest
from test_gguf import build_tiny_llama  # the tiny LLaMA of the GGUF tests (same directory)

import edge_sdk
from converters.gguf.writer import parse_tensor_types
from edge_sdk.errors import ConfigError

pytestmark = pytest.mark.slow  # converts a tiny LLaMA (seconds)


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    path = tmp_path_factory.mktemp("mixed") / "tiny-llama"
    build_tiny_llama(path)
    return path


def types_in(bundle, variant):
    reader = gguf.GGUFReader(bundle.root / variant.files[0].path)
    return {t.name: t.tensor_type.name.lower() for t in reader.tensors}


def test_output_and_embedding_kept_at_higher_precision_in_a_4_bit_file(tiny_llama, tmp_path):
    # q4_0 is written by gguf-py, q4_k_m by llama.cpp's quantizer (its per-tensor overrides, through ctypes)
    bundle = edge_sdk.convert_llm(
        tiny_llama, quantize=["q4_0", "q4_k_m"], tensor_types="output=q8_0,token_embd=f16", output=tmp_path / "b"
    )
    for variant in bundle.variants:
        types = types_in(bundle, variant)
        assert types["output.weight"] == "q8_0" and types["token_embd.weight"] == "f16", variant.id
        assert types["blk.0.attn_output.weight"] != "q8_0" or variant.id.endswith("k-m")  # 'output' is not a suffix
        options = variant.recipe.options
        recorded = dict(item.split("=") for item in options["tensor_types"].split(","))
        assert recorded["output.weight"] == "q8_0" and recorded["token_embd.weight"] == "f16"
        assert all(types[name] == kind for name, kind in recorded.items())  # the recipe says what the file holds
        assert options["tensor_type_overrides"] == "output=q8_0,token_embd=f16"
        assert variant.accuracy is not None and variant.accuracy.passed  # llama.cpp loads and runs it
    q4_0 = next(v for v in bundle.variants if v.id == "gguf-q4-0")
    assert types_in(bundle, q4_0)["blk.0.attn_q.weight"] == "q4_0" and q4_0.recipe.options["quantizer"] == "gguf-py"


def test_a_tensor_type_that_names_nothing_or_no_type_is_refused(tiny_llama, tmp_path):
    with pytest.raises(ConfigError, match=r"'outptu' matches no weight of this model; its weights: .*'output'"):
        edge_sdk.convert_llm(tiny_llama, quantize="q8_0", tensor_types="outptu=f16", output=tmp_path / "x")
    with pytest.raises(ConfigError, match="'q4_k_m' in 'output=q4_k_m' is not a GGUF tensor type; valid: 'f32'"):
        parse_tensor_types("output=q4_k_m")
    with pytest.raises(ConfigError, match="write PATTERN=TYPE"):
        parse_tensor_types("output")
    assert not (tmp_path / "x").exists()
