"""The last 15 minutes of every stage's numbers, one sample per group reading, for the page's charts.

The lag timer reads the groups every 5 s; each reading, together with the
last complete 10 s window of the telemetry tables, becomes one sample:
per stage the arrival and answer (consume) rate, the age of the oldest
waiting record, the p99 of the hop into the stage, error answers per second
and members; and the end-to-end p50/p99. 180 samples of a few numbers each:
kept in memory (a restarted monitor starts its charts empty, while its
windowed tables come back from their changelogs).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.operations.status import StageStatus
from pipeline.telemetry import TOTAL_HOP, quantile

HISTORY_S = 900.0
SERIES = ("arrival", "consume", "lag_s", "p99_ms", "errors", "members")


@dataclass
class History:
    """A ring of samples covering ``span_s``; :meth:`to_json` gives the page one list per series."""

    span_s: float = HISTORY_S
    samples: deque[tuple[float, dict[str, dict[str, float | None]], dict[str, float | None]]] = field(
        default_factory=deque
    )

    def add(self, at: float, statuses: Mapping[str, StageStatus], ten_s: Any) -> None:
        """One sample at ``at`` (epoch s) from a group reading and the last 10 s window (a ``Window``)."""
        stages: dict[str, dict[str, float | None]] = {}
        for name, status in statuses.items():
            counts = ten_s.latency.get(name)
            answers = ten_s.answers.get(name, {})
            errors = sum(n for status_, n in answers.items() if status_ != "ok")
            stages[name] = {
                "arrival": status.arrival_rate,
                "consume": status.consume_rate,
                "lag_s": None if status.lag_s is None or status.lag_s == float("inf") else status.lag_s,
                "p99_ms": quantile(counts, 0.99) if counts else None,
                "errors": round(errors / 10.0, 2),
                "members": float(len(status.members)),
            }
        total = ten_s.latency.get(TOTAL_HOP)
        e2e = {"p50_ms": quantile(total, 0.5) if total else None, "p99_ms": quantile(total, 0.99) if total else None}
        self.samples.append((at, stages, e2e))
        while self.samples and self.samples[0][0] < at - self.span_s:
            self.samples.popleft()

    def to_json(self, names: list[str]) -> dict[str, Any]:
        """``{"at": [...], "stages": {stage: {series: [...]}}, "end_to_end": {"p50_ms": [...], "p99_ms": [...]}}``."""
        stages = {name: {series: [s[1].get(name, {}).get(series) for s in self.samples] for series in SERIES}
                  for name in names}  # fmt: skip
        return {
            "span_s": self.span_s,
            "at": [s[0] for s in self.samples],
            "stages": stages,
            "end_to_end": {q: [s[2][q] for s in self.samples] for q in ("p50_ms", "p99_ms")},
        }
