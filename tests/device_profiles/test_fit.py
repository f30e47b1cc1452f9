"""`fit`: predicted peak memory and speed per variant on a profile, with each reason a variant does not fit."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import edge_sdk
from device_profiles.estimate import LlmShape
from edge_sdk.apps.cli.main import app
from edge_sdk.bundle import FitReport
from edge_sdk.errors import ConfigError, ProfileError

SMALL_BOARD = """\
id: small-board
name: A small board with 256 MB for models
class: sbc
cpu: {{arch: aarch64, model: 4x Cortex-A53, cores: 4, max_freq_ghz: 1.2, features: [neon], source: test}}
memory: {{total_mb: 512, budget_mb: {budget}, bandwidth_gbps: 2.0, source: test}}
storage: {{kind: microsd, size_gb: 8, source: test}}
os: {{name: Linux, version: "6"}}
power: {{typical_w: 2, max_w: 5, source: test}}
backends:
  onnx: {{runtime_version: "1.31"}}
  gguf: {{runtime_version: "0.3.36"}}
"""


def board(tmp_path, budget: int = 256):
    path = tmp_path / f"board-{budget}.yaml"
    path.write_text(SMALL_BOARD.format(budget=budget))
    return path


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    from converters.gguf.zoo import smollm2_as_shipped

    return smollm2_as_shipped(tmp_path_factory.mktemp("smollm2") / "b")


def invoke(*args: str):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})


def test_kv_cache_is_sized_from_the_gguf_header(smollm2):
    shape = LlmShape.from_gguf(smollm2.path_of(smollm2.variants[0].files[0]))
    # SmolLM2-135M: 30 layers, 3 KV heads of 64 dims, K and V in f16, trained for 8192 tokens
    assert (shape.layers, shape.kv_heads, shape.head_dim, shape.trained_context) == (30, 3, 64, 8192)
    report = edge_sdk.fit(smollm2, "rpi4", context=4096)["gguf-q4_1"]
    assert report.breakdown["kv_cache"] == 4096 * 30 * 3 * 64 * 2 * 2
    assert report.breakdown["weights"] == smollm2.variants[0].size_bytes
    assert report.fits and report.context == 4096
    assert report.predicted_tokens_per_second and report.predicted_tokens_per_second > 1


def test_an_llm_that_does_not_fit_a_small_board_says_why_and_what_to_try(smollm2, tmp_path):
    report = edge_sdk.fit(smollm2, board(tmp_path), context=8192)["gguf-q4_1"]
    assert not report.fits
    (reason,) = report.reasons
    assert "KV cache at context 8192 180.0 MiB" in reason and "budget 256.0 MiB" in reason
    assert "try" in reason and any(s.startswith("context ") for s in report.suggestions)
    # the suggestion is right: at the suggested context it fits
    suggested = int(next(s for s in report.suggestions if s.startswith("context ")).split()[1])
    assert edge_sdk.fit(smollm2, board(tmp_path), context=suggested)["gguf-q4_1"].fits


def test_a_context_beyond_training_is_a_reason(smollm2):
    report = edge_sdk.fit(smollm2, "jetson-orin-nano", context=16384)["gguf-q4_1"]
    assert not report.fits
    assert "context 16384 exceeds the 8192 tokens the model was trained for" in report.reasons


def test_a_slow_llm_is_refused_with_the_speed_asked(smollm2):
    report = edge_sdk.fit(smollm2, "rpi4", min_tokens_per_second=10_000)["gguf-q4_1"]
    assert not report.fits and "below the 10000 asked" in report.reasons[0]


def test_tensor_model_fits_a_small_board_and_not_a_tiny_one(onnx_bundle, tmp_path):
    reports = edge_sdk.fit(onnx_bundle, board(tmp_path), variant="onnx-int8-static")
    assert reports["onnx-int8-static"].fits
    assert reports["onnx-int8-static"].predicted_latency_ms is not None  # timed here, scaled to the board
    tiny = edge_sdk.fit(onnx_bundle, board(tmp_path, budget=64), variant="onnx-none", measure=False)["onnx-none"]
    assert not tiny.fits and "budget 64.0 MiB" in tiny.reasons[0] and "engine 35.0 MiB" in tiny.reasons[0]


def test_a_model_with_a_fixed_batch_is_timed_at_that_batch(tmp_path):
    import numpy as np
    import torch
    from torch import nn

    model = nn.Linear(16, 4).eval()
    x = np.random.default_rng(0).standard_normal((4, 16)).astype(np.float32)
    onnx_file = tmp_path / "fixed.onnx"  # exported without dynamic axes: it takes batches of exactly 4
    torch.onnx.export(model, (torch.from_numpy(x),), str(onnx_file), input_names=["input"], dynamo=False)
    bundle = edge_sdk.convert(str(onnx_file), {"input": np.concatenate([x, x])}, output=tmp_path / "b")
    assert bundle.variants[0].inputs[0].shape == (4, 16)
    report = edge_sdk.fit(bundle, "rpi4")["onnx-none"]
    assert report.fits and report.predicted_latency_ms is not None


def test_context_on_a_tensor_model_is_refused(onnx_bundle):
    with pytest.raises(ConfigError, match="--context applies to language models"):
        edge_sdk.fit(onnx_bundle, "rpi4", context=1024, measure=False)


def test_cli_fit_yes_no_and_json(smollm2, tmp_path):
    yes = invoke("fit", str(smollm2.root), "-p", "rpi5")
    assert yes.exit_code == 0, yes.output
    assert "gguf-q4_1" in yes.output and "yes" in yes.output and "tokens/s" in yes.output
    no = invoke("fit", str(smollm2.root), "-p", str(board(tmp_path)), "--context", "8192")
    assert no.exit_code == 1
    assert "needs" in no.output and "try context" in no.output
    as_json = json.loads(invoke("fit", str(smollm2.root), "-p", "rpi4", "--json").output)
    assert as_json["gguf-q4_1"]["fits"] is True and as_json["gguf-q4_1"]["context"] == 2048


def test_cli_fit_bad_profile_names_the_valid_ones(smollm2):
    result = invoke("fit", str(smollm2.root), "-p", "rpi9")
    assert result.exit_code == 1
    assert "unknown device profile 'rpi9'" in result.output and "'rpi4'" in result.output
    with pytest.raises(ProfileError):
        edge_sdk.fit(smollm2, "no-such-board")


def test_old_fit_reports_still_parse():
    old = {"profile": "rpi4", "fits": True, "estimated_peak_bytes": 1, "budget_bytes": 2, "reasons": []}
    report = FitReport.model_validate(old)
    assert report.breakdown == {} and report.predicted_tokens_per_second is None
