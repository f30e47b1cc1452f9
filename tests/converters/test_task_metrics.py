"""The task decides the metrics: what each task is judged on, and what a refusal tells the user to change."""

from __future__ import annotations

import numpy as np

from converters.metrics import advice, compare
from converters.verify import tolerance_for
from edge_sdk.types import QuantScheme, Task

RNG = np.random.default_rng(0)
INT8 = tolerance_for(QuantScheme.INT8_STATIC)


def _names(report):
    return [m.name for m in report.metrics]


def _failing(report):
    return [m.name for m in report.metrics if not m.passed]


def test_embeddings_are_judged_by_direction_and_neighbours_not_by_argmax():
    ref = RNG.standard_normal((32, 384))
    close = compare({"e": ref}, {"e": ref + 0.01 * RNG.standard_normal(ref.shape)}, INT8, reference_name="r",
                    task=Task.EMBEDDING)  # fmt: skip
    assert _names(close) == ["cosine_mean", "cosine_min", "neighbour_agreement"] and close.passed
    shuffled = compare({"e": ref}, {"e": ref[::-1]}, INT8, reference_name="r", task=Task.EMBEDDING)
    assert set(_failing(shuffled)) == {"cosine_mean", "cosine_min", "neighbour_agreement"}


def test_regression_is_judged_over_each_whole_output():
    # One value per sample: a per-sample cosine would be 1 whatever the values; over the whole output it is not.
    ref = {"distance": RNG.uniform(1, 2, (64, 1)), "landmarks": RNG.standard_normal((64, 10))}
    off = {"distance": ref["distance"][::-1].copy(), "landmarks": ref["landmarks"]}
    report = compare(ref, off, INT8, reference_name="r", task=Task.REGRESSION)
    assert _names(report) == ["max_abs_error", "max_rel_error", "cosine[distance]", "cosine[landmarks]"]
    assert "top1_agreement" not in _names(report) and not report.passed
    assert report.metric("cosine[landmarks]").passed and report.metric("max_rel_error").value > 0.35


def test_classification_is_judged_on_decisions_and_accuracy():
    logits = RNG.standard_normal((50, 5))
    labels = logits.argmax(1)
    report = compare({"l": logits}, {"l": logits * 3.0}, INT8, labels=labels, reference_name="r",
                     task=Task.CLASSIFICATION)  # fmt: skip
    assert _names(report) == ["top1_agreement", "accuracy"] and report.passed  # scaled logits, same decisions


def test_the_advice_names_the_option_that_moves_the_failing_metric():
    ref = RNG.standard_normal((32, 16))
    values = compare({"e": ref}, {"e": ref[::-1]}, INT8, reference_name="r", task=Task.EMBEDDING)
    text = advice(values)
    assert "--max-accuracy-drop" in text and "-q none" in text and "--task" in text  # neighbours and cosines fail
    only_cosine = compare({"e": ref}, {"e": ref + 0.5 * RNG.standard_normal(ref.shape)}, INT8, reference_name="r",
                          task=Task.REGRESSION)  # fmt: skip
    assert "--max-accuracy-drop" not in advice(only_cosine) and "--calibration" in advice(only_cosine)
    logits = RNG.standard_normal((50, 5))
    flipped = compare({"l": logits}, {"l": -logits}, INT8, reference_name="r", task=Task.CLASSIFICATION)
    assert advice(flipped) == "To pass: raise the allowed drop (--max-accuracy-drop)."


def test_overflowing_outputs_leave_a_readable_report():
    from edge_sdk.bundle import AccuracyReport

    ref = RNG.standard_normal((8, 4))
    broken = ref.copy()
    broken[0, 0] = np.inf
    broken[1, 1] = np.nan
    for task in (Task.TENSOR, Task.REGRESSION, Task.EMBEDDING):
        report = compare({"y": ref}, {"y": broken}, INT8, reference_name="r", task=task)
        assert not report.passed
        again = AccuracyReport.model_validate_json(report.model_dump_json())  # inf/NaN would come back as null
        assert again == report
