"""Counting what came back: one :class:`Row` per scenario, and the table of rows.

Definitions (docs/reliability.md repeats them):

* **sent**: requests the broker acknowledged (refused ones are counted apart);
* **lost**: sent requests with no answer by the end of the drain wait;
* **duplicated**: answers beyond the first for the same id;
* **p50/p99**: from produce to the first answer, over answered requests;
* **event p99** (cluster scenarios): p99 over the requests sent from the
  fault's start until the cluster was whole again (every replica in sync);
* **recovery**: for each fault, from its end (member killed, broker answering
  again, process continued, burst over) to the first answer to a request
  produced after that end; the worst over the scenario's faults;
* **peak memory**: the highest resident set size sampled from /proc of every
  member and of the broker.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from pipeline.tools.bench.loadgen import Arrival


@dataclass
class Row:
    scenario: str
    sent: int = 0
    refused: int = 0
    answers: Counter[str] = field(default_factory=Counter)  # "ok" or the error code
    lost: int = 0
    duplicated: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    recovery_s: float | None = None
    # p99 of the requests sent while a cluster fault acted (pipeline.tools.chaos.cluster_faults).
    event_p99_ms: float | None = None
    faults: int = 0
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    restarts: int = 0
    notes: list[str] = field(default_factory=list)
    # Broken promises a scenario checks beyond lost and duplicated (fuzz does).
    problems: list[str] = field(default_factory=list)
    lost_ids: list[str] = field(default_factory=list)
    duplicated_ids: list[str] = field(default_factory=list)

    @property
    def not_ok(self) -> int:
        return sum(n for code, n in self.answers.items() if code != "ok")


def count(
    scenario: str,
    acked: Mapping[str, float],
    refused: Mapping[str, str],
    arrivals: Sequence[Arrival],
    fault_ends: Iterable[float] = (),
) -> Row:
    """The row for ``acked`` requests given every answer read (answers to other ids are ignored)."""
    row = Row(scenario, sent=len(acked), refused=len(refused))
    first: dict[str, Arrival] = {}
    seen: Counter[str] = Counter()
    for arrival in arrivals:
        if arrival.id not in acked:
            continue
        seen[arrival.id] += 1
        if arrival.id not in first:
            first[arrival.id] = arrival
            row.answers[arrival.code or arrival.status] += 1
    row.lost_ids = sorted(set(acked) - set(first))
    row.lost = len(row.lost_ids)
    row.duplicated_ids = sorted(i for i, n in seen.items() if n > 1)
    row.duplicated = sum(n - 1 for n in seen.values())
    latencies = sorted((a.at - acked[i]) * 1000 for i, a in first.items())
    row.p50_ms = percentile(latencies, 50)
    row.p99_ms = percentile(latencies, 99)
    ends = list(fault_ends)
    row.faults = len(ends)
    if ends:
        recoveries = [recovery(end, acked, first) for end in ends]
        row.recovery_s = None if any(r is None for r in recoveries) else max(r for r in recoveries if r is not None)
        if row.recovery_s is None:
            row.notes.append("no answer to a request sent after a fault: never recovered")
    return row


def recovery(end: float, acked: Mapping[str, float], first: Mapping[str, Arrival]) -> float | None:
    """Seconds from ``end`` to the first answer to a request produced after it."""
    after = [a.at for i, a in first.items() if acked[i] >= end]
    return min(after) - end if after else None


def percentile(sorted_values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return None
    rank = max(0, min(len(sorted_values) - 1, math.ceil(p / 100 * len(sorted_values)) - 1))
    return sorted_values[rank]


# -- the table ----------------------------------------------------------------------

COLUMNS = ("scenario", "sent", "answers", "lost", "dup", "p50", "p99", "event p99", "recovery", "peak RSS", "restarts")


def render(rows: Sequence[Row]) -> str:
    """One table: a line per scenario, then every process's peak memory and the notes."""
    lines = [[c for c in COLUMNS]]
    for row in rows:
        member_peaks = {k: v for k, v in row.peak_rss_mb.items() if k != "broker"}
        top = max(member_peaks.items(), key=lambda kv: kv[1], default=None)
        rss = f"{top[1]:.0f}M {top[0]}" if top else "-"
        if "broker" in row.peak_rss_mb:
            rss += f", broker {row.peak_rss_mb['broker']:.0f}M"
        recovered = "-" if not row.faults else ("never" if row.recovery_s is None else f"{row.recovery_s:.1f}s")
        lines.append(
            [
                row.scenario,
                f"{row.sent}" + (f" (+{row.refused} refused)" if row.refused else ""),
                " ".join(
                    f"{code}:{n}" for code, n in sorted(row.answers.items(), key=lambda kv: (kv[0] != "ok", kv[0]))
                )
                or "none",
                str(row.lost),
                str(row.duplicated),
                _ms(row.p50_ms),
                _ms(row.p99_ms),
                _ms(row.event_p99_ms),
                recovered,
                rss,
                str(row.restarts),
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(COLUMNS))]
    out = [" | ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in lines]
    out.insert(1, "-+-".join("-" * w for w in widths))
    for row in rows:
        if row.peak_rss_mb:
            peaks = ", ".join(f"{name} {mb:.0f}M" for name, mb in sorted(row.peak_rss_mb.items()))
            out.append(f"{row.scenario}: peak RSS {peaks}")
        out.extend(f"{row.scenario}: {note}" for note in row.notes)
        out.extend(f"{row.scenario}: PROBLEM: {problem}" for problem in row.problems[:20])
        if len(row.problems) > 20:
            out.append(f"{row.scenario}: ... and {len(row.problems) - 20} more problems")
    return "\n".join(out)


def _codes(row: Row) -> str:
    ordered = sorted(row.answers.items(), key=lambda kv: (kv[0] != "ok", kv[0]))
    return " ".join(f"{code}:{n}" for code, n in ordered) or "none"


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1000:.1f}s" if value >= 10_000 else f"{value:.0f}ms"
