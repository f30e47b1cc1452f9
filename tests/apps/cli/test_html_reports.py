"""`plan --html` and `inspect --html`: reports that open offline in a real headless browser, with a chart drawn
in the page itself (inline SVG), showing the plan's candidates and the bundle's variants."""

from __future__ import annotations

import re

import pytest
from headless import fetches_nothing, section_rows, text_of
from typer.testing import CliRunner

from device_profiles.fit import human
from edge_sdk.apps.cli.main import app

pytestmark = pytest.mark.slow  # a real plan (three conversions of the digits CNN) and chromium


def invoke(*args: str):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})


def svg_of(dom: str, section_id: str) -> str:
    found = re.search(rf'(?s)<section id="{section_id}">.*?(<svg.*?</svg>)', dom)
    assert found, f"no chart in section {section_id!r}"
    return found.group(1)


@pytest.fixture(scope="module")
def plan_page(tmp_path_factory):
    page = tmp_path_factory.mktemp("plan") / "plan.html"
    result = invoke(
        "plan", "zoo:digits-cnn", "-p", "rpi4", "--objective", "size", "-b", "onnx", "-q", "none,fp16,int8-static",
        "--prune", "0", "--html", str(page),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"wrote {page}" in " ".join(result.output.split())
    return page


def test_the_plan_report_opens_offline_with_its_chart_and_ranked_table(plan_page, browser, tmp_path):
    dom = browser.dom(plan_page.as_uri(), screenshot=tmp_path / "plan.png", size=(1280, 1100))
    text = text_of(dom)
    assert text.startswith("plan for zoo:digits-cnn on rpi4") and "ranked by size" in text and fetches_nothing(dom)
    rows = section_rows(dom, "ranked")
    ids = [row[1] for row in rows]
    assert sorted(ids) == ["onnx-fp16", "onnx-int8-static", "onnx-none"]
    ranked = [row for row in rows if row[0] != "–"]
    assert [int(row[0]) for row in ranked] == list(range(1, len(ranked) + 1)) and ranked
    assert ranked[0][1] in text.split("best ")[1][:40]  # the best one named above the chart
    chart = svg_of(dom, "chart")
    assert chart.count("<circle") == len(rows) + 1  # one mark a candidate, one in the legend
    for row in rows:  # each candidate's mark, with its size and speed as the table shows them
        size, speed = row[6], row[8].removesuffix(" ms")
        assert re.search(rf"<title>{re.escape(row[1])}: file size {re.escape(size)}, latency per call \(ms, lower is "
                         rf"better\) {re.escape(speed)}", chart), row  # fmt: skip


def test_inspect_html_shows_variants_accuracy_and_memory(onnx_bundle, browser, tmp_path):
    page = tmp_path / "bundle.html"
    result = invoke("inspect", str(onnx_bundle.root), "--html", str(page))
    assert result.exit_code == 0, result.output
    dom = browser.dom(page.as_uri(), screenshot=tmp_path / "bundle.png")
    text = text_of(dom)
    assert text.startswith(f"digits-cnn {onnx_bundle.manifest.version}") and fetches_nothing(dom)
    rows = {row[0]: row for row in section_rows(dom, "variants")}
    assert set(rows) == {v.id for v in onnx_bundle.variants}
    for v in onnx_bundle.variants:
        accuracy = v.accuracy.metric("accuracy")
        assert rows[v.id][3] == human(v.size_bytes)
        assert rows[v.id][4].startswith(f"accuracy {accuracy.value:.4g}")
        assert rows[v.id][5] == ("pass" if v.accuracy.passed else "FAIL")
    memory = svg_of(dom, "memory")
    header = re.search(r'(?s)<section id="memory">.*?<thead>(.*?)</thead>', dom).group(1)
    parts = [text_of(h) for h in re.findall(r"(?s)<th[^>]*>(.*?)</th>", header)][1:-1]
    for variant, *sizes, peak in section_rows(dom, "memory"):  # the breakdown the fit report holds, part by part
        report = next(iter(onnx_bundle.variant(variant).fit.values()))
        assert peak == human(report.estimated_peak_bytes)
        assert dict(zip(parts, sizes, strict=True)) == {k: human(b) for k, b in report.breakdown.items()}
        for part, size in report.breakdown.items():  # and drawn: one bar piece each, its size on hover
            assert f"<title>{variant}, {part}: {human(size)}</title>" in memory
    assert svg_of(dom, "accuracy").count("<rect") >= len(rows)


def test_a_report_into_a_directory_is_a_clear_error(onnx_bundle, tmp_path):
    result = invoke("inspect", str(onnx_bundle.root), "--html", str(tmp_path))
    assert result.exit_code == 1
    assert "it is a directory; give a file name" in " ".join(result.output.split())


def test_a_plan_where_nothing_fits_still_writes_its_report_saying_why(tmp_path):
    board = tmp_path / "board.yaml"  # 256 MB for models: SmolLM2 in f16 cannot fit, so nothing is converted
    board.write_text(
        "id: small-board\nname: small\nclass: sbc\n"
        "cpu: {arch: aarch64, model: A53, cores: 4, max_freq_ghz: 1.2, features: [neon], source: t}\n"
        "memory: {total_mb: 512, budget_mb: 256, bandwidth_gbps: 2.0, source: t}\n"
        "storage: {kind: sd, size_gb: 8, source: t}\nos: {name: Linux, version: '6'}\n"
        "power: {typical_w: 2, max_w: 5, source: t}\nbackends: {gguf: {}}\n"
    )
    page = tmp_path / "plan.html"
    result = invoke("plan", "zoo:smollm2", "-p", str(board), "-q", "f16", "--context", "2048", "--html", str(page))
    assert result.exit_code == 1 and page.is_file()
    html = page.read_text()
    rows = section_rows(html, "ranked")
    assert [(r[1], r[10]) for r in rows] == [("gguf-fp16@ctx2048", "does not fit")]
    assert "budget 256.0 MiB" in rows[0][11] and "none qualifies" in text_of(html)
    assert "nothing to draw" in html  # no candidate was measured: no chart of guesses
