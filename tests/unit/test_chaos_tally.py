"""Counting a chaos scenario's answers: lost, duplicated, latency, recovery."""

from __future__ import annotations

from pipeline.chaos.tally import count, percentile, render
from pipeline.kafka.loadgen import Arrival


def test_lost_duplicated_codes_and_latency_are_counted_by_id() -> None:
    acked = {"a": 0.0, "b": 0.0, "c": 10.0, "d": 10.0}
    arrivals = [
        Arrival("a", "ok", None, 0.1),
        Arrival("b", "error", "deadline_exceeded", 0.3),
        Arrival("a", "ok", None, 0.5),  # a duplicate
        Arrival("c", "ok", None, 12.0),
        Arrival("zz", "ok", None, 1.0),  # not ours: ignored
    ]
    row = count("x", acked, {"e": "too large"}, arrivals, fault_ends=[5.0])
    assert (row.sent, row.refused, row.lost, row.duplicated) == (4, 1, 1, 1)
    assert row.lost_ids == ["d"] and row.duplicated_ids == ["a"]
    assert dict(row.answers) == {"ok": 2, "deadline_exceeded": 1}
    assert row.p50_ms is not None and round(row.p50_ms) == 300
    assert row.recovery_s == 7.0  # the first request sent after the fault (c at 10 s) answered at 12 s
    table = render([row])
    assert "ok:2 deadline_exceeded:1" in table and "7.0s" in table


def test_no_answer_after_a_fault_means_never_recovered() -> None:
    row = count("x", {"a": 0.0, "b": 9.0}, {}, [Arrival("a", "ok", None, 1.0)], fault_ends=[5.0])
    assert row.recovery_s is None and "never" in render([row])


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile([], 50) is None
