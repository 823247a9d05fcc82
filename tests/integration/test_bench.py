"""``pipeline bench --quick`` on the real broker: every row is there and every number is positive.

Timings are not checked against thresholds (the machine is shared): the
bench's own ratios, side by side, are the result.
"""

from __future__ import annotations

import math

from pipeline.settings import Settings
from pipeline.tools.bench.report import render
from pipeline.tools.bench.run import Options, run_bench


def test_quick_bench_has_every_row_with_positive_numbers(settings: Settings) -> None:
    lines: list[str] = []
    result = run_bench(settings, Options(quick=True, batches=(1, 8), eager=True), say=lines.append)
    assert any("raw ONNX Runtime" in line for line in lines)  # progress while it runs
    rows = result["rows"]
    assert set(rows) == {"raw ort", "transformers eager", "naive consumer", "pipeline exactly_once",
                         "pipeline at_least_once"}  # fmt: skip
    for name, row in rows.items():
        assert row["throughput"] > 0, name
    assert result["model_ms_batch1"] > 0
    for guarantee in ("exactly_once", "at_least_once"):
        row = rows[f"pipeline {guarantee}"]
        assert row["errors"] == 0
        for key in ("light_p50_ms", "light_p99_ms", "half_rate", "half_p50_ms", "half_p99_ms"):
            assert row[key] > 0, (guarantee, key)
        assert set(row["cpu_per_request"]) >= {"filter", "split", "infer", "merge"}
        assert all(v > 0 for v in row["cpu_per_request"].values())
        assert {"filter", "split", "infer", "merge"} <= set(row["hops_p50_ms"])
    assert result["ratios"]["pipeline exactly_once / raw ort"] > 0
    assert result["ratios"]["pipeline exactly_once / raw ort just before it"] > 0
    assert not any(math.isnan(v) for v in result["ratios"].values())
    text = render(result)
    header = next(line for line in text.splitlines() if line.startswith("| row"))
    assert all(line.count("|") == header.count("|") for line in text.splitlines() if line.startswith("| "))
