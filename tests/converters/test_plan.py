"""`plan`: candidates that cannot fit are dropped unconverted, the rest measured and ranked; the plan replays."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import edge_sdk
from converters.plan import Candidate, Objective, Plan, candidate_id, rank
from edge_sdk.apps.cli.main import app
from edge_sdk.errors import ConfigError, ProfileError
from edge_sdk.planning import load_plan, make_request, run_plan
from edge_sdk.types import Backend, QuantScheme

pytestmark = pytest.mark.slow  # converts the digits CNN for each candidate that can fit (seconds each)

SPACE = ["-b", "onnx", "-q", "none,int8-static", "--prune", "0,0.5"]  # 4 candidates, 2 conversions


def small_board(tmp_path, backends: str):
    """A board with 256 MB for models that runs `backends` (YAML flow mapping entries)."""
    board = tmp_path / "board.yaml"
    board.write_text(
        "id: small-board\nname: small\nclass: sbc\n"
        "cpu: {arch: aarch64, model: A53, cores: 4, max_freq_ghz: 1.2, features: [neon], source: t}\n"
        "memory: {total_mb: 512, budget_mb: 256, bandwidth_gbps: 2.0, source: t}\n"
        "storage: {kind: sd, size_gb: 8, source: t}\nos: {name: Linux, version: '6'}\n"
        f"power: {{typical_w: 2, max_w: 5, source: t}}\nbackends: {{{backends}}}\n"
    )
    return board


def invoke(*args: str):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "220"})


@pytest.fixture(scope="module")
def rpi4_plan(tmp_path_factory):
    out = tmp_path_factory.mktemp("plan") / "plan.json"
    result = invoke(
        "plan", "zoo:digits-cnn", "-p", "rpi4", "--objective", "size", "--max-accuracy-drop", "1%", *SPACE,
        "--output", str(out),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return out, result.output


def test_the_plan_for_digits_on_rpi4_picks_a_variant_within_the_bound(rpi4_plan):
    path, output = rpi4_plan
    plan = load_plan(path)
    best = plan.best()
    assert best.status == "ranked" and best.accuracy_drop <= 0.01
    assert best.peak_bytes < 2816 * 1024 * 1024  # rpi4's budget
    # by size, the smallest wins: int8 weights of the pruned model
    assert best.id == "onnx-int8-static-pruned50"
    sizes = [c.size_bytes for c in plan.ranked()]
    assert sizes == sorted(sizes) and len(sizes) == 4
    assert "onnx-int8-static-pruned50" in output and "rank" in output


def test_the_plan_is_made_again_from_its_json(rpi4_plan, tmp_path):
    """`--from` replays a plan file; `--json` prints the plan (the plan file's shape) and nothing else on stdout."""
    path, _ = rpi4_plan
    result = invoke("plan", "--from", str(path), "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert {"request", "candidates"} <= set(document)
    assert {"id", "rank", "status", "size_bytes", "accuracy", "reasons"} <= set(document["candidates"][0])
    first, second = load_plan(path), Plan.model_validate(document)
    assert first.request == second.request
    key = [(c.id, c.rank, c.size_bytes, c.accuracy) for c in first.candidates]
    assert key == [(c.id, c.rank, c.size_bytes, c.accuracy) for c in second.candidates]


def test_convert_auto_takes_the_top_entry(rpi4_plan, tmp_path):
    path, _ = rpi4_plan
    out = tmp_path / "auto"
    result = invoke("convert", "zoo:digits-cnn", "--auto", "--plan", str(path), "-o", str(out))
    assert result.exit_code == 0, result.output
    bundle = edge_sdk.open_bundle(out)
    (variant,) = bundle.variants
    assert variant.id == "onnx-int8-static-pruned50" and variant.accuracy.passed
    assert variant.fit["rpi4"].fits


def test_convert_auto_refuses_options_the_plan_would_override(rpi4_plan, tmp_path):
    path, _ = rpi4_plan
    args = ["convert", "zoo:digits-cnn", "--auto", "--plan", str(path), "-o", str(tmp_path / "x")]
    result = invoke(*args, "-q", "fp16", "--profile", "rpi5")
    assert result.exit_code != 0 and "leave out --quantize, --profile" in result.output
    assert not (tmp_path / "x").exists()


def test_what_cannot_fit_is_dropped_before_converting(tmp_path):
    board = small_board(tmp_path, "executorch: {}, onnx: {}")
    request = make_request("zoo:digits-cnn", board, backends="executorch", quantize="none,int8-static", prune=[0.0])
    plan = run_plan(request, workdir=tmp_path / "work")
    assert {c.status for c in plan.candidates} == {"does-not-fit"}
    assert all(c.size_bytes is None for c in plan.candidates)  # never converted
    assert "budget 256.0 MiB" in plan.candidates[0].reasons[0] and "onnx backend" in plan.candidates[0].reasons[0]
    with pytest.raises(ConfigError, match="no variant of zoo:digits-cnn fits small-board"):
        plan.best()


def test_a_plan_without_workdir_leaves_no_candidate_bundles_behind(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where a default workdir would be made
    board = small_board(tmp_path, "executorch: {}, onnx: {}")
    request = make_request("zoo:digits-cnn", board, backends="executorch", quantize="none", prune=[0.0])
    assert run_plan(request).candidates
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith("edge-plan-")]


def test_without_torch_pruning_the_pruned_candidates_are_refused_and_the_rest_planned(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torch_pruning", None)  # as if the [prune] extra were not installed
    request = make_request("zoo:digits-cnn", "rpi4", backends="onnx", quantize="none", prune="0,0.5")
    plan = run_plan(request, workdir=tmp_path / "work")
    by_id = {c.id: c for c in plan.candidates}
    assert by_id["onnx-none"].rank == 1
    refused = by_id["onnx-none-pruned50"]
    assert refused.status == "refused" and "pip install 'edge-sdk[prune]'" in refused.reasons[0]


def test_a_model_pruning_cannot_shrink_gets_its_pruned_candidates_refused(tmp_path):
    factory = tmp_path / "tiny.py"
    factory.write_text(
        "import numpy as np\nimport torch\n\n\ndef make():\n"
        "    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 4)).eval()\n"
        "    model.example_inputs = lambda: {'input': np.ones((8, 16), np.float32)}\n    return model\n"
    )
    request = make_request(f"{factory}:make", "rpi4", backends="onnx", quantize="none", prune="0,0.5")
    by_id = {c.id: c for c in run_plan(request, workdir=tmp_path / "work").candidates}
    assert by_id["onnx-none"].rank == 1
    assert (
        by_id["onnx-none-pruned50"].status == "refused" and "removed nothing" in by_id["onnx-none-pruned50"].reasons[0]
    )


def test_a_value_given_twice_is_planned_once():
    request = make_request("zoo:digits-cnn", "rpi4", backends="onnx,onnx", quantize="none,fp16,none", prune="0,0.5,0")
    assert (request.backends, request.quantizations) == ((Backend.ONNX,), (QuantScheme.NONE, QuantScheme.FP16))
    assert request.prune == (0.0, 0.5)
    assert make_request("zoo:smollm2", "rpi4", contexts="512,1024,512").contexts == (512, 1024)


def test_bad_profile_or_impossible_objective_is_a_clear_message():
    with pytest.raises(ProfileError, match="unknown device profile 'rpi3'"):
        make_request("zoo:digits-cnn", "rpi3")
    with pytest.raises(ConfigError, match="unknown objective 'speed'; valid: 'latency', 'size', 'accuracy'"):
        make_request("zoo:digits-cnn", "rpi4", objective="speed")
    with pytest.raises(ConfigError, match="between 0 and 1"):
        make_request("zoo:digits-cnn", "rpi4", max_accuracy_drop=1.5)
    with pytest.raises(ConfigError, match="pruning ratio must be between 0 and 0.9"):
        run_plan(make_request("zoo:digits-cnn", "rpi4", prune="0.95", backends="onnx", quantize="none"))
    result = invoke("plan", "zoo:digits-cnn", "-p", "rpi4", "--max-accuracy-drop", "lots")
    assert result.exit_code == 1 and "--max-accuracy-drop 'lots' is not a share; write it as 1%" in result.output


def test_a_language_model_is_planned_by_quantization_and_context(tmp_path):
    from test_gguf import build_tiny_llama  # the tiny LLaMA of the GGUF tests (same directory)

    build_tiny_llama(tmp_path / "tiny-llama")  # trained for 256 positions
    request = make_request(
        str(tmp_path / "tiny-llama"), "rpi4", quantize="f16,q8_0", contexts="128,256,512", max_accuracy_drop=0.3
    )
    assert request.backends == (edge_sdk.Backend.GGUF,) and request.prune == (0.0,)
    plan = run_plan(request, workdir=tmp_path / "work")
    assert len(plan.candidates) == 6
    too_long = [c for c in plan.candidates if c.context == 512]
    assert all(c.status == "does-not-fit" and "trained for" in c.reasons[0] for c in too_long)
    best = plan.best()
    assert best.quantization is edge_sdk.QuantScheme.Q8_0  # fewer bytes read per token than f16
    assert best.tokens_per_second and best.accuracy >= 0.7
    with pytest.raises(ConfigError, match="pruning applies to tensor models"):
        make_request(str(tmp_path / "tiny-llama"), "rpi4", prune="0.5")


@pytest.mark.parametrize("objective", list(Objective))
def test_llm_contexts_that_tie_rank_longest_first_not_as_strings(objective):
    """One quantization at several contexts: same file, same accuracy, same predicted decode speed."""
    same = {"backend": Backend.GGUF, "quantization": QuantScheme.Q8_0, "status": "ranked", "size_bytes": 100}
    scored = {**same, "tokens_per_second": 50.0, "accuracy": 0.9}
    candidates = [Candidate(id=candidate_id(Backend.GGUF, QuantScheme.Q8_0, 0.0, n), context=n, **scored) for n in
                  (512, 1024, 2048, 4096)]  # fmt: skip
    ranked = sorted(rank(candidates, objective), key=lambda c: c.rank or 0)
    assert [c.context for c in ranked] == [4096, 2048, 1024, 512]  # not "@ctx1024" < "@ctx2048" < ... < "@ctx512"


def test_an_llm_quantization_clearly_too_big_is_not_converted(tmp_path):
    board = small_board(tmp_path, "gguf: {}")
    plan = run_plan(make_request("zoo:smollm2", board, quantize="f16", contexts="2048,8192"), workdir=tmp_path / "w")
    assert [c.id for c in plan.candidates] == ["gguf-fp16@ctx2048", "gguf-fp16@ctx8192"]
    assert all(c.status == "does-not-fit" and c.size_bytes is None for c in plan.candidates)
    assert "budget 256.0 MiB" in plan.candidates[0].reasons[0]
    assert not (tmp_path / "w" / "llm").exists()  # nothing was converted


def test_a_module_in_memory_is_planned_on_the_users_evaluation_data(tmp_path):
    from converters.zoo_text import outlier_classifier

    model = outlier_classifier()
    inputs, labels = model.eval_data()
    # Labels that contradict the model: a plan judged on them, not on synthesized inputs, must say accuracy 0.
    plan = edge_sdk.plan(
        model, "rpi5", backends="onnx", quantize="none", prune="0", eval_data=(inputs, 1 - labels),
        workdir=tmp_path / "work",
    )  # fmt: skip
    (candidate,) = plan.candidates
    assert plan.request.model == "module:SequenceClassifier"
    assert candidate.status == "ranked" and candidate.accuracy == 0.0
    with pytest.raises(ConfigError, match="module in memory"):
        edge_sdk.planning.convert_best(plan, tmp_path / "out")


def test_plan_cli_takes_eval_data_and_announces_the_candidates(tmp_path, digits):
    import json

    import numpy as np

    data = tmp_path / "eval.npz"
    np.savez(data, input=digits.test_x, labels=(digits.test_y + 1) % 10)  # every label wrong
    out = tmp_path / "plan.json"
    result = invoke(
        "plan", "zoo:digits-cnn", "-p", "rpi5", "-b", "onnx", "-q", "none", "--prune", "0", "--eval", str(data),
        "--output", str(out),
    )  # fmt: skip
    assert "planning 1 candidate for zoo:digits-cnn on rpi5" in result.output
    (candidate,) = json.loads(out.read_text())["candidates"]
    assert candidate["accuracy"] < 0.05  # judged on the given labels, not the model's own eval_data()
