"""What each quantization recipe costs and buys: size ratio vs fp32, metric drop, latency ratio vs fp32.

    python benchmarks/quant_fidelity.py [--models digits,encoder,llm] [--rounds 7] [--calls 50]

Models: the digits CNN (ONNX Runtime: fp16, int8-dynamic, int8-static; accuracy on the held-out split), the
outlier-channel transformer classifier of converters.zoo_text (int8 all layers and accuracy-aware int8, judged
on its evaluation data), and SmolLM2-135M through llama.cpp (q8_0, q4_0; 1 - top-1 agreement with f32).
Latencies are medians of interleaved calls (variant, fp32, variant, ...) on one thread. Writes
benchmarks/results/quant_fidelity.json, prints one table, and draws it in benchmarks/results/quant_fidelity.html
(one size × latency × metric drop chart per model: the plan report's chart code).
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import RESULTS, interleaved, write_results  # benchmarks/ is on sys.path when run as a script

import edge_sdk

DROP_BOUND = 0.01  # the plan's default bound on the accuracy drop: the chart's red end


def _drop(variant: Any) -> float | None:
    metric = variant.accuracy.metric("accuracy") or variant.accuracy.metric("top1_agreement")
    if metric is None or metric.reference is None:
        return None
    return round(metric.reference - metric.value, 4)


def _rows(bundle: edge_sdk.Bundle, inputs: dict[str, np.ndarray], rounds: int, calls: int, model: str) -> list[dict]:
    base = bundle.variant(next(v.id for v in bundle.variants if v.recipe.quantization.value in ("none", "f32")))
    rows = []
    with edge_sdk.load(bundle, base.id, threads=1) as reference:
        for variant in bundle.variants:
            with edge_sdk.load(bundle, variant.id, threads=1) as session:
                quant, ref = interleaved(lambda s=session: s.run(inputs), lambda: reference.run(inputs), rounds, calls)
            rows.append(
                {
                    "model": model,
                    "variant": variant.id,
                    "float_layers": variant.recipe.options.get("float_layers", ""),
                    "size_ratio": round(variant.size_bytes / base.size_bytes, 4),
                    "metric_drop": _drop(variant),
                    "passed": variant.accuracy.passed,
                    "latency_ratio": round(quant / ref, 3),
                }
            )
    return rows


def digits(work: Path, rounds: int, calls: int) -> list[dict]:
    from converters.zoo import digits_cnn, digits_data

    data = digits_data()
    bundle = edge_sdk.convert(
        digits_cnn(), {"input": data.train_x[:64]}, backend="onnx", quantize="none,fp16,int8-dynamic,int8-static",
        output=work / "digits", calibration={"input": data.train_x[:512]},
        eval_data=({"input": data.test_x}, data.test_y), allow_failed=True,
    )  # fmt: skip
    return _rows(bundle, {"input": data.test_x[:32]}, rounds, calls, "digits-cnn")


def encoder(work: Path, rounds: int, calls: int) -> list[dict]:
    from converters.zoo_text import outlier_classifier

    model = outlier_classifier()
    rows = []
    plain = edge_sdk.convert(model, backend="onnx", quantize="none,int8-static", output=work / "enc", allow_failed=True)
    rows += _rows(plain, {"tokens": model.example_inputs()["tokens"][:32]}, rounds, calls, "encoder (all int8)")
    aware = edge_sdk.convert(
        model, backend="onnx", quantize="none,int8-static,int8-dynamic", output=work / "enc-aware",
        max_accuracy_drop=0.01, allow_failed=True,
    )  # fmt: skip
    rows += _rows(aware, {"tokens": model.example_inputs()["tokens"][:32]}, rounds, calls, "encoder (accuracy-aware)")
    return [r for r in rows if not (r["model"].endswith("aware)") and r["variant"] == "onnx-none")]


def llm(work: Path, rounds: int, calls: int) -> list[dict]:
    bundle = edge_sdk.convert_llm("zoo:smollm2", quantize="f32,q8_0,q4_0", output=work / "llm", allow_failed=True)
    tokens = np.arange(1, 33, dtype=np.int64)
    rows = []
    base = bundle.variant("gguf-f32")
    with edge_sdk.load(bundle, base.id, threads=1) as reference:
        for variant in bundle.variants:
            with edge_sdk.load(bundle, variant.id, threads=1) as session:
                quant, ref = interleaved(
                    lambda s=session: s.score(tokens), lambda: reference.score(tokens), rounds, max(1, calls // 10)
                )
            agreement = variant.accuracy.metric("top1_agreement")
            rows.append(
                {
                    "model": "smollm2-135m",
                    "variant": variant.id,
                    "float_layers": "",
                    "size_ratio": round(variant.size_bytes / base.size_bytes, 4),
                    "metric_drop": None if agreement is None else round(1 - agreement.value, 4),
                    "passed": variant.accuracy.passed,
                    "latency_ratio": round(quant / ref, 3),
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="digits,encoder,llm")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=50)
    args = parser.parse_args()
    makers = {"digits": digits, "encoder": encoder, "llm": llm}
    rows: list[dict] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="quant-fidelity-") as tmp:
        for name in args.models.split(","):
            rows += makers[name](Path(tmp), args.rounds, args.calls)
    print(f"{'model':<26} {'variant':<22} {'size×':>7} {'drop':>7} {'latency×':>9}  ok  float layers")
    for r in rows:
        drop = "-" if r["metric_drop"] is None else f"{r['metric_drop']:.4f}"
        print(
            f"{r['model']:<26} {r['variant']:<22} {r['size_ratio']:>7.3f} {drop:>7} {r['latency_ratio']:>9.2f}  "
            f"{'yes' if r['passed'] else 'NO ':<3} {r['float_layers']}"
        )
    write_results("quant_fidelity", {"rows": rows}, started=started)
    page = RESULTS / "quant_fidelity.html"
    page.write_text(report(rows), encoding="utf-8")
    print(f"wrote {page}")


def report(rows: list[dict]) -> str:
    """One chart per model (size × latency × metric drop, against its float variant), drawn with the code the
    plan report uses, and the table: a page that opens offline."""
    from edge_sdk.apps.pages.html import document, section, table
    from edge_sdk.apps.pages.svg import Point, scatter

    sections = []
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        points = [
            Point(
                r["size_ratio"],
                r["latency_ratio"],
                r["variant"],
                None if r["metric_drop"] is None else min(1.0, max(0.0, r["metric_drop"]) / DROP_BOUND),
                note=f"metric drop {r['metric_drop']}"
                + (f"; float layers {r['float_layers']}" if r["float_layers"] else ""),
                hollow=not r["passed"],
            )
            for r in mine
        ]
        chart = scatter(
            points,
            x_label="size vs fp32 (×)",
            y_label="latency vs fp32 (×, lower is better)",
            x_format=lambda v: f"{v:.2g}×",
            y_format=lambda v: f"{v:.2g}×",
            shade_label="metric drop",
            shade_ends=("0", f"{DROP_BOUND:.0%} or more"),
        )
        sections.append(section(model, chart))
    headers = ["model", "variant", "size ×", "metric drop", "latency ×", "gate", "float layers"]
    body = [
        [
            r["model"],
            r["variant"],
            r["size_ratio"],
            r["metric_drop"],
            r["latency_ratio"],
            "passed" if r["passed"] else "FAILED",
            r["float_layers"],
        ]
        for r in rows
    ]
    sections.append(section("All variants", table(headers, body, numeric=(2, 3, 4))))
    return document(
        "What each quantization costs and buys", sections, subtitle=platform.processor() or platform.machine()
    )


if __name__ == "__main__":
    main()
