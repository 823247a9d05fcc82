"""What the monitor knows and shows, without faust: table keys, the page's JSON, scaling advice.

The faust app (:mod:`pipeline.monitor.app`) feeds this from its windowed
tables and its lag timer; the web page and ``/metrics`` read it. Keeping it
free of faust lets unit tests build a whole page state by hand.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily

from pipeline.monitor.history import History
from pipeline.operations.scaling import Decision, Memory, Policy, decide
from pipeline.operations.status import StageStatus
from pipeline.telemetry import BUCKETS_MS, COST_KINDS, TOTAL_HOP, StageReport, error_rate, histogram, quantile

LATEST_DEAD = 20
SEP = "|"


def counter_keys(report: StageReport) -> dict[str, int]:
    """The increments one report makes to the monitor's counting tables, by key.

    ``answers|STAGE|STATUS``, ``dead|STAGE|CODE``, ``records|STAGE``,
    ``latency|HOP|BUCKET`` (a count per latency bucket, so windows merge by
    adding, which faust's windowed ``+=`` does for tumbling and hopping alike)
    and ``cost|TASK|KIND`` (answers, cached and tokens counted; CPU and model
    time in microseconds, so every count stays an integer).
    """
    keys: dict[str, int] = {}
    for status, count in report.answers.items():
        keys[SEP.join(("answers", report.stage, status))] = count
    for code, count in report.dead_letters.items():
        keys[SEP.join(("dead", report.stage, code))] = count
    if report.records:
        keys[SEP.join(("records", report.stage))] = report.records
    for hop, samples in report.hops_ms.items():
        for bucket, count in enumerate(histogram(samples)):
            if count:
                keys[SEP.join(("latency", hop, str(bucket)))] = count
    for task, row in report.costs.items():
        for kind, amount in row.items():
            scaled = round(amount * 1000) if kind.endswith("_ms") else round(amount)
            if scaled and kind in COST_KINDS:
                keys[SEP.join(("cost", task, kind))] = scaled
    return keys


@dataclass(frozen=True)
class Window:
    """One window's counts, read back from a counting table."""

    answers: dict[str, dict[str, int]]  # stage -> status -> n
    dead: dict[str, dict[str, int]]  # stage -> code -> n
    records: dict[str, int]  # stage -> n
    latency: dict[str, list[int]]  # hop -> bucket counts
    costs: dict[str, dict[str, int]] = field(default_factory=dict)  # task -> kind -> sum (ms kinds in µs)

    @classmethod
    def of(cls, items: Iterable[tuple[str, int]]) -> Window:
        window = cls({}, {}, {}, {})
        for key, count in items:
            kind, *rest = key.split(SEP)
            if kind == "answers" and len(rest) == 2:
                window.answers.setdefault(rest[0], {})[rest[1]] = count
            elif kind == "dead" and len(rest) == 2:
                window.dead.setdefault(rest[0], {})[rest[1]] = count
            elif kind == "records" and len(rest) == 1:
                window.records[rest[0]] = count
            elif kind == "cost" and len(rest) == 2:
                window.costs.setdefault(rest[0], {})[rest[1]] = count
            elif kind == "latency" and len(rest) == 2 and rest[1].isdigit() and int(rest[1]) < len(BUCKETS_MS):
                window.latency.setdefault(rest[0], [0] * len(BUCKETS_MS))[int(rest[1])] += count
        return window

    def to_json(self, seconds: float) -> dict[str, Any]:
        hops = {hop: {"p50_ms": quantile(c, 0.5), "p99_ms": quantile(c, 0.99), "count": sum(c)}
                for hop, c in self.latency.items()}  # fmt: skip
        return {
            "seconds": seconds,
            "answers": self.answers,
            "dead_letters": self.dead,
            "records_per_s": {s: round(n / seconds, 2) for s, n in self.records.items()},
            "error_rate": {s: error_rate(a) for s, a in self.answers.items()},
            "hops": hops,
            "cost_per_1k": {task: per_thousand(row) for task, row in self.costs.items() if row.get("answers")},
        }


@dataclass
class MonitorState:
    """Everything the page shows, updated by the app's agent (dead letters) and lag timer (stages, advice)."""

    stages: list[tuple[str, str, tuple[str, ...]]]  # (name, source, sinks) in flow order
    policy: Policy = field(default_factory=Policy)
    statuses: dict[str, StageStatus] = field(default_factory=dict)
    advice: dict[str, Decision] = field(default_factory=dict)
    memory: dict[str, Memory] = field(default_factory=dict)
    latest_dead: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=LATEST_DEAD))
    reports: int = 0
    lag_read_at: float | None = None
    history: History = field(default_factory=History)

    def saw(self, report: StageReport) -> None:
        self.reports += 1
        for dead in report.latest_dead:
            self.latest_dead.appendleft({**dead, "stage": report.stage, "at_ms": report.at_ms})

    def lag(self, statuses: list[StageStatus], now: float) -> None:
        """A new reading of the groups: keep it, and advise each stage's size from it."""
        from pipeline.local.autoscale import downstream_of, loads

        self.statuses = {s.stage: s for s in statuses}
        self.lag_read_at = time.time()
        downstream = downstream_of(self.stages)
        counts = {s.stage: max(1, len(s.members)) for s in statuses}
        for load in loads(statuses, counts, downstream, self.policy):
            decision, self.memory[load.stage] = decide(load, self.memory.get(load.stage, Memory()), self.policy, now)
            self.advice[load.stage] = decision

    def to_json(self, ten_s: Window, one_min: Window) -> dict[str, Any]:
        """The page's data: the flow map's stages in order, the windows, the latest dead letters."""
        minute = one_min.to_json(60.0)
        stages = []
        for name, source, sinks in self.stages:
            status = self.statuses.get(name)
            hop = minute["hops"].get(name, {})
            advice = self.advice.get(name)
            stages.append({
                "name": name,
                "source": source,
                "sinks": list(sinks),
                "state": status.state if status else "unknown",
                "members": [{"client_id": m.client_id, "host": m.host, "partitions": list(m.partitions)}
                            for m in (status.members if status else ())],
                "partitions": status.partitions if status else None,
                "lag": status.lag if status else None,
                "lag_s": _finite(status.lag_s) if status else None,
                "drain_s": _finite(status.drain_s) if status else None,
                "arrival_rate": status.arrival_rate if status else None,
                "consume_rate": status.consume_rate if status else None,
                "p50_ms": hop.get("p50_ms"),
                "p99_ms": hop.get("p99_ms"),
                "error_rate": minute["error_rate"].get(name),
                "dead_letters_1m": sum(minute["dead_letters"].get(name, {}).values()),
                "advice": None if advice is None else {"members": advice.desired, "action": advice.action,
                                                       "reason": advice.reason},
            })  # fmt: skip
        total = minute["hops"].get(TOTAL_HOP, {})
        return {
            "at": time.time(),
            "lag_read_at": self.lag_read_at,
            "reports": self.reports,
            "stages": stages,
            "end_to_end": {"p50_ms": total.get("p50_ms"), "p99_ms": total.get("p99_ms")},
            "cost_per_1k": minute["cost_per_1k"],
            "windows": {"10s": ten_s.to_json(10.0), "1m": minute},
            "latest_dead": list(self.latest_dead),
            "history": self.history.to_json([name for name, _, _ in self.stages]),
        }

    def advice_json(self) -> dict[str, Any]:
        """What ``pipeline up --autoscale --advice URL`` (and anything else) can follow."""
        return {stage: {"members": d.desired, "action": d.action, "reason": d.reason, "inputs": d.inputs}
                for stage, d in self.advice.items()}  # fmt: skip


def prometheus_text(state: MonitorState, minute: Mapping[str, Any]) -> bytes:
    """The monitor's own /metrics (gauges read at scrape time), by prometheus-client."""
    registry = CollectorRegistry()
    families: list[GaugeMetricFamily] = []

    def gauge(name: str, help_text: str, label: str, samples: Iterable[tuple[str, float | None]]) -> None:
        family = GaugeMetricFamily(name, help_text, labels=[label])
        for value_label, value in samples:
            if value is not None:
                family.add_metric([value_label], value)
        families.append(family)

    statuses = list(state.statuses.values())
    gauge(
        "pipeline_monitor_lag_records",
        "Records waiting in each stage's source topic",
        "stage",
        [(s.stage, float(s.lag)) for s in statuses],
    )
    gauge(
        "pipeline_monitor_lag_seconds",
        "Age of the oldest record waiting for each stage",
        "stage",
        [(s.stage, s.lag_s) for s in statuses],
    )
    gauge(
        "pipeline_monitor_drain_seconds",
        "Time to drain each stage's backlog at current rates (+Inf: never)",
        "stage",
        [(s.stage, math.inf if s.drain_s is None else s.drain_s) for s in statuses],
    )
    gauge(
        "pipeline_monitor_members",
        "Members in each stage's consumer group",
        "stage",
        [(s.stage, float(len(s.members))) for s in statuses],
    )
    gauge(
        "pipeline_scaling_advice_members",
        "Members the monitor advises for each stage",
        "stage",
        [(st, float(d.desired)) for st, d in state.advice.items()],
    )
    hops = minute.get("hops", {})
    gauge(
        "pipeline_monitor_latency_p50_seconds",
        "Median time to reach each hop over the last minute",
        "hop",
        [(h, None if v["p50_ms"] is None else v["p50_ms"] / 1000) for h, v in hops.items()],
    )
    gauge(
        "pipeline_monitor_latency_p99_seconds",
        "99th percentile time to reach each hop over the last minute",
        "hop",
        [(h, None if v["p99_ms"] is None else v["p99_ms"] / 1000) for h, v in hops.items()],
    )
    gauge(
        "pipeline_monitor_error_ratio",
        "Share of each stage's answers that were errors over the last minute",
        "stage",
        minute.get("error_rate", {}).items(),
    )

    per_1k = GaugeMetricFamily("pipeline_monitor_cost_per_1k_answers",
                               "What 1,000 answers of each task cost over the last minute: cpu_s, model_s, tokens_in, "
                               "tokens_out, cache_hits", labels=["task", "kind"])  # fmt: skip
    for task, row in minute.get("cost_per_1k", {}).items():
        for kind, value in row.items():
            if kind != "answers" and value is not None:
                per_1k.add_metric([task, kind], value)
    families.append(per_1k)

    class Families:
        def collect(self) -> Iterable[GaugeMetricFamily]:
            return families

    registry.register(Families())  # type: ignore[arg-type]
    return bytes(generate_latest(registry))


def per_thousand(row: Mapping[str, int]) -> dict[str, float]:
    """A task's summed costs as what 1,000 of its answers cost: CPU and model seconds, tokens, cache hits."""
    scale = 1000 / row["answers"]
    return {
        "answers": row["answers"],
        "cpu_s": round(row.get("cpu_ms", 0) / 1e6 * scale, 4),  # µs summed
        "model_s": round(row.get("model_ms", 0) / 1e6 * scale, 4),
        "tokens_in": round(row.get("tokens_in", 0) * scale, 1),
        "tokens_out": round(row.get("tokens_out", 0) * scale, 1),
        "cache_hits": round(row.get("cached", 0) * scale, 1),
    }


def _finite(value: float | None) -> float | None:
    return None if value is None or math.isinf(value) else value
