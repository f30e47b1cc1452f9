"""`edge-sdk export-app`: a phone-ready folder, loaded as an app would, with ExecuTorch's runner binding
(TextLLMRunner) and with onnxruntime_genai, giving the text the SDK's own session gives."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import edge_sdk
from edge_sdk.apps.cli.main import app

pytestmark = pytest.mark.slow  # needs the engines bundle (tests/conftest.py: engines_bundle)
PROMPT = "The quick brown fox"


def _export(bundle, variant, dest):
    result = CliRunner().invoke(app, ["export-app", str(bundle.root), "--variant", variant, "-o", str(dest)])
    assert result.exit_code == 0, result.output
    return json.loads((dest / "app.json").read_text())


def _session_text(bundle, variant, n):
    with edge_sdk.load(bundle.root, variant) as session:
        return "".join(session.generate(PROMPT, max_tokens=n, temperature=0))


def test_executorch_folder_runs_in_the_text_llm_runner(engines_bundle, tmp_path):
    from executorch.extension.llm.runner import GenerationConfig, TextLLMRunner

    manifest = _export(engines_bundle, "executorch-f32", tmp_path / "app")
    assert manifest["engine"] == "executorch" and manifest["context_length"] == 256
    runner = TextLLMRunner(str(tmp_path / "app" / manifest["model"]), str(tmp_path / "app" / manifest["tokenizer"]))
    pieces: list[str] = []
    config = GenerationConfig(max_new_tokens=8, temperature=0.0, echo=False, num_bos=0, num_eos=0)
    runner.generate(PROMPT, config, token_callback=pieces.append)
    assert "".join(pieces) == _session_text(engines_bundle, "executorch-f32", 8)


def test_onnx_folder_runs_in_onnxruntime_genai(engines_bundle, tmp_path):
    import numpy as np
    import onnxruntime_genai as og

    manifest = _export(engines_bundle, "onnx-f32", tmp_path / "app")
    assert manifest["engine"] == "onnxruntime-genai"
    model = og.Model(str(tmp_path / "app"))
    tokenizer = og.Tokenizer(model)
    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=256)
    generator = og.Generator(model, params)
    generator.append_tokens(tokenizer.encode(PROMPT))
    tokens = []
    for _ in range(8):
        generator.generate_next_token()
        tokens.append(int(generator.get_next_tokens()[0]))
    text = tokenizer.decode(np.asarray(tokens, dtype=np.int32))
    assert text == _session_text(engines_bundle, "onnx-f32", 8)


def test_a_variant_no_phone_engine_runs_is_refused(engines_bundle, tmp_path):
    result = CliRunner().invoke(app, ["export-app", str(engines_bundle.root), "--variant", "gguf-f32",
                                      "-o", str(tmp_path / "x")])  # fmt: skip
    assert result.exit_code != 0
    assert "executorch-f32" in result.output and "onnx-int4" in result.output
    assert not (tmp_path / "x").exists()


def test_convert_refuses_an_engine_without_the_quantization_before_exporting(tiny_llama, tmp_path):
    args = ["convert", str(tiny_llama[0]), "-b", "gguf,executorch", "-q", "q4_k_m", "--context", "128",
            "-o", str(tmp_path / "b")]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0
    assert "executorch would get no variant" in result.output and "'8da4w'" in result.output
    assert not (tmp_path / "b").exists()
