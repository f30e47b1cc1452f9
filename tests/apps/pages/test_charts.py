"""The chart code every report shares: axes on round numbers from zero (or logarithmic across a wide span),
marks where the numbers put them, text escaped; a plan's chart names what it plots."""

from __future__ import annotations

import re

import pytest

from converters.plan import Candidate, Objective, Plan, PlanRequest, rank
from edge_sdk.apps.pages.html import esc, table
from edge_sdk.apps.pages.plan_report import plan_report
from edge_sdk.apps.pages.svg import Axis, Point, scatter, shade_colour
from edge_sdk.types import Backend, QuantScheme


def test_a_linear_axis_starts_at_zero_on_round_ticks():
    axis = Axis([0.093, 0.122], 0, 100)
    ticks = axis.ticks()
    step = ticks[1] - ticks[0]
    assert axis.lo == 0 and ticks[0] == 0 and ticks[-1] <= axis.hi < ticks[-1] + step and 4 <= len(ticks) <= 9
    assert any(step == pytest.approx(m * 10**k) for m in (1, 2, 5) for k in range(-3, 1))  # 1, 2 or 5 × 10^k
    assert axis.at(0) == 0 and axis.at(axis.hi) == pytest.approx(100)
    kib = Axis([50_000, 160_000], 0, 100, unit=1024)  # bytes: ticks on whole KB, as the labels say
    assert all(t % 1024 == 0 for t in kib.ticks()) and len(kib.ticks()) >= 3


def test_a_wide_span_turns_logarithmic():
    axis = Axis([1e5, 5e8], 0, 100)
    assert axis.log and {1e6, 1e7, 1e8} <= set(axis.ticks())
    assert axis.at(1e6) - axis.at(1e5) == pytest.approx(axis.at(1e8) - axis.at(1e7))  # a decade, a decade
    assert not Axis([1e5, 5e8], 0, 100, log=False).log


def test_marks_sit_where_their_numbers_say_and_text_is_escaped():
    points = [Point(10.0, 5.0, "<a>", 0.0, mark="1"), Point(20.0, 10.0, "b", 1.0, hollow=True)]
    svg = scatter(points, x_label="size", y_label="time", x_format=str, y_format=str, width=500, height=300)
    circles = [(float(x), float(y)) for x, y in re.findall(r'<circle cx="([\d.]+)" cy="([\d.]+)" r="9"', svg)]
    (x_b, y_b), (x_a, y_a) = circles  # the one that did not qualify is drawn first, under the others
    assert x_b > x_a and y_b < y_a  # further right, higher up
    assert (x_b - 78) == pytest.approx(2 * (x_a - 78), rel=0.01)  # from zero: twice the value, twice as far
    assert "&lt;a&gt;" in svg and "<a>" not in svg
    assert shade_colour(0.0) == "#1a9850" and shade_colour(1.0) == "#d73027" and shade_colour(None) != "#1a9850"
    assert "nothing to draw" in scatter([], x_label="", y_label="", x_format=str, y_format=str)


def test_tables_escape_cells_and_say_when_empty():
    html = table(["a"], [["<script>x</script>"]])
    assert "<script>" not in html and esc("<script>x</script>") in html
    assert "nothing here" in table(["a"], [], empty="nothing here")


def test_an_llm_plan_is_charted_by_tokens_per_second_with_the_ones_that_failed_hollow():
    request = PlanRequest(
        model="zoo:smollm2", profile="rpi5", objective=Objective.LATENCY, max_accuracy_drop=0.02,
        backends=(Backend.GGUF,), quantizations=(QuantScheme.Q8_0, QuantScheme.Q4_0),
    )  # fmt: skip
    candidates = [
        Candidate(id="gguf-q8_0", backend=Backend.GGUF, quantization=QuantScheme.Q8_0, status="ranked",
                  size_bytes=145_000_000, tokens_per_second=21.0, accuracy=0.99, accuracy_drop=0.01),
        Candidate(id="gguf-q4_0", backend=Backend.GGUF, quantization=QuantScheme.Q4_0, status="accuracy",
                  reasons=("top-1 agreement dropped 5.00%, over the 2.00% allowed",), size_bytes=85_000_000,
                  tokens_per_second=35.0, accuracy=0.95, accuracy_drop=0.05),
    ]  # fmt: skip
    page = plan_report(Plan(request=request, profile_id="rpi5", candidates=rank(candidates, request.objective)))
    assert "decode speed (tokens/s, higher is better)" in page and "21.0 tok/s" in page
    assert re.search(r'<circle [^>]*fill="#ffffff" stroke="#d73027"', page)  # q4_0: hollow, red (over the bound)
    assert "over the 2.00% allowed" in page and "best" in page
