"""`plan` stops measuring a candidate that cannot beat an already-measured one on any objective."""

from __future__ import annotations

import pytest

from converters.dominance import dominating
from converters.plan import Candidate, PlanRequest, plan_tensor_model
from converters.plan_types import speed_key
from edge_sdk.types import Backend, QuantScheme


def measured(cid: str, size: int, latency: float | None, drop: float | None, status: str = "ranked") -> Candidate:
    return Candidate(
        id=cid, backend=Backend.ONNX, quantization=QuantScheme.INT8_STATIC, status=status, size_bytes=size,
        latency_ms=latency, accuracy_drop=drop, accuracy=0.98,
    )  # fmt: skip


def test_only_a_smaller_no_slower_candidate_without_drop_dominates():
    best = measured("a", 1000, 0.11, 0.0)
    assert dominating(2000, 0.11, [best]) is best  # same speed at two digits (0.114 vs 0.11), bigger
    assert dominating(2000, 0.114, [best]) is best
    assert dominating(2000, 0.095, [best]) is None  # faster: could rank first by latency
    assert dominating(1000, 0.2, [best]) is None  # as small: the tie could go its way
    assert dominating(900, 0.2, [best]) is None  # smaller: could rank first by size
    assert dominating(2000, 0.2, [measured("a", 1000, 0.11, 0.003)]) is None  # a drop: it could be more accurate
    assert dominating(2000, 0.2, [measured("a", 1000, 0.11, 0.0, "does-not-fit")]) is None  # not a contender
    assert dominating(2000, None, [best]) is None and dominating(2000, 0.2, [measured("a", 1000, None, 0.0)]) is None


@pytest.mark.slow  # converts the digits CNN three times (~20 s on 2 cores)
def test_a_dominated_candidate_is_recorded_unmeasured_and_the_rest_are_ranked(tmp_path, monkeypatch):
    from converters.pipeline import ConvertOptions
    from converters.sources import eval_data_of
    from converters.tensor_verifier import TensorReference
    from device_profiles import load_profile
    from edge_sdk.api import resolve_source
    from edge_sdk.types import Task

    measured_ids: list[str] = []
    real_measure = TensorReference.measure

    def counting(self, variant):
        measured_ids.append(variant.variant_id)
        return real_measure(self, variant)

    monkeypatch.setattr(TensorReference, "measure", counting)
    source = resolve_source("zoo:digits-cnn", None)
    evaluation = eval_data_of(source.module)
    request = PlanRequest(
        model="zoo:digits-cnn", profile="rpi4", backends=(Backend.ONNX,),
        quantizations=(QuantScheme.INT8_STATIC, QuantScheme.NONE, QuantScheme.FP16),
    )  # fmt: skip
    options = ConvertOptions(
        name="digits", task=Task.TENSOR, eval_inputs=dict(evaluation[0]), eval_labels=evaluation[1]
    )
    plan = plan_tensor_model(
        source, request, load_profile("rpi4"), options, tmp_path, host=load_profile("host")
    )  # timed here: which candidate is dominated depends on this machine, what follows from it does not
    by_id = {c.id: c for c in plan.candidates}
    assert set(by_id) == {"onnx-int8-static", "onnx-none", "onnx-fp16"} and not plan.pending
    first = by_id["onnx-int8-static"]  # measured first: nothing to be dominated by
    assert first.status == "ranked" and "onnx-int8-static" in measured_ids
    for c in plan.candidates:
        if c.status == "dominated":
            winner = by_id[c.reasons[0].split()[2].rstrip(":")]
            assert winner.status == "ranked" and winner.accuracy_drop == 0.0
            assert winner.size_bytes < c.size_bytes and speed_key(winner.latency_ms) <= speed_key(c.latency_ms)
            assert c.accuracy is None and c.rank is None and c.id not in measured_ids  # never evaluated
        else:
            assert c.status == "ranked" and c.id in measured_ids
            earlier = [by_id[i] for i in list(by_id)[: list(by_id).index(c.id)]]
            assert dominating(c.size_bytes, c.latency_ms, earlier) is None  # none that should have been stopped
    assert len(measured_ids) == sum(c.status != "dominated" for c in plan.candidates)
