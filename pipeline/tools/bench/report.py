"""The bench's result as one JSON-ready dict, a table and the ratios between rows."""

from __future__ import annotations

import math
from typing import Any

from pipeline.tools.bench.stats import ratio


def ratios(result: dict[str, Any]) -> dict[str, float]:
    """Throughput of each pipeline row against the limit and the baselines; light-load latency over the model."""
    limit = result["rows"]["raw ort"]["throughput"]
    out: dict[str, float] = {}
    for name, row in result["rows"].items():
        if not name.startswith("pipeline"):
            continue
        out[f"{name} / raw ort"] = ratio(row["throughput"], limit)
        if "limit_before" in row:  # raw ort at the same batch, timed just before this row
            out[f"{name} / raw ort just before it"] = ratio(row["throughput"], row["limit_before"])
        for other in ("naive consumer", "transformers eager"):
            if other in result["rows"]:
                out[f"{name} / {other}"] = ratio(row["throughput"], result["rows"][other]["throughput"])
        light, half = row.get("light_p50_ms", math.nan), row.get("half_p50_ms", math.nan)
        out[f"{name}: half-load p50 / light-load p50"] = ratio(half, light)
    cuda = result["rows"].get("raw ort cuda fp32", {}).get("throughput", math.nan)
    for name, row in result["rows"].items():  # the pipeline rows on CUDA, one member each or scaled
        if name.startswith("pipeline") and name.endswith(" cuda"):
            out[f"{name} / raw ort cuda fp32"] = ratio(row["throughput"], cuda)
    if "raw ort cuda fp16" in result["rows"]:
        out["raw ort cuda fp16 / raw ort cuda fp32"] = ratio(result["rows"]["raw ort cuda fp16"]["throughput"], cuda)
    for name in ("raw ort int8", "transformers eager", "naive consumer"):
        if name in result["rows"]:
            out[f"{name} / raw ort"] = ratio(result["rows"][name]["throughput"], limit)
    return out


OUTSIDE_MODEL = ("broker", "filter", "split", "merge")
"""The processes whose CPU per request is the pipeline's own cost (issue 19: at most 0.5 ms together)."""
OUTSIDE_MODEL_GOAL_MS = 0.5


def outside_model(result: dict[str, Any]) -> list[str]:
    """For each pipeline row: the CPU ms per request of the broker, filter, split and merge, summed."""
    lines = []
    for name, row in result["rows"].items():
        cpu = row.get("cpu_per_request", {})
        if not name.startswith("pipeline") or not all(k in cpu for k in OUTSIDE_MODEL):
            continue
        total = sum(cpu[k] for k in OUTSIDE_MODEL) * 1000
        each = " + ".join(f"{k} {cpu[k] * 1000:.2f}" for k in OUTSIDE_MODEL)
        goal = f"goal ≤ {OUTSIDE_MODEL_GOAL_MS}"
        lines.append(f"{name}: CPU per request outside the model {total:.2f} ms ({each}; {goal})")
    return lines


def _ms(value: float | None) -> str:
    return "" if value is None or math.isnan(value) else f"{value:.1f}"


def table(result: dict[str, Any]) -> str:
    """The rows as a Markdown table (it pastes into docs/performance.md as it is)."""
    default_ms = result["model_ms_batch1"]
    lines = [
        "| row | texts/s | batch | light p50 ms | light p99 ms | light p50 − model ms¹ | half-load rate | "
        "half p50 ms | half p99 ms | CPU ms/request |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, row in result["rows"].items():
        light = row.get("light_p50_ms")
        model_ms = row.get("model_ms", default_ms)
        model_ms = default_ms if model_ms is None or math.isnan(model_ms) else model_ms
        cpu = ", ".join(f"{k} {v * 1000:.2f}" for k, v in sorted(row.get("cpu_per_request", {}).items()))
        lines.append(
            f"| {name} | {row['throughput']:.1f} | {row.get('batch', '')} | {_ms(light)} | "
            f"{_ms(row.get('light_p99_ms'))} | {_ms(light - model_ms if light is not None else None)} | "
            f"{_ms(row.get('half_rate'))} | {_ms(row.get('half_p50_ms'))} | {_ms(row.get('half_p99_ms'))} | {cpu} |"
        )
    lines.append("")
    lines.append("¹ the model alone on one text, p50, timed in the bench process just before that row's light load")
    return "\n".join(lines)


def render(result: dict[str, Any]) -> str:
    """Everything a reader needs: conditions, the table, hops, ratios, notes."""
    head = (
        f"bench: {result['texts']} texts of {result['words']} words, {result['threads']} ORT threads, "
        f"{result['cpus']} CPUs, load average before {result['load_before']}, after {result['load_after']}; "
        f"model alone, one text: {result['model_ms_batch1']:.2f} ms"
    )
    parts = [head, "", table(result), ""]
    for name, row in result["rows"].items():
        if row.get("hops_p50_ms"):
            hops = ", ".join(f"{hop} {ms:.1f}" for hop, ms in row["hops_p50_ms"].items())
            parts.append(f"{name}: light-load p50 per hop (ms): {hops}")
    parts.extend(outside_model(result))
    parts.append("")
    for name, value in result["ratios"].items():
        parts.append(f"{name}: {value:.2f}" if not math.isnan(value) else f"{name}: n/a")
    for note in result.get("notes", []):
        parts.append(f"note: {note}")
    return "\n".join(parts)
