"""Telemetry reports: what a member sums per interval, their encoding, and the monitor's percentiles."""

from __future__ import annotations

import pytest

from pipeline.errors import DecodeError
from pipeline.messages import Answer, DeadLetterReason, Headers
from pipeline.records import Output
from pipeline.telemetry import (
    BUCKETS_MS,
    SAMPLES_PER_HOP,
    TOTAL_HOP,
    Aggregator,
    StageReport,
    error_rate,
    histogram,
    merge_counts,
    quantile,
)


def answer(request_id: str, ok: bool = True) -> Output:
    headers = Headers(hops={"requested": 1000.0, "filter": 1004.0, "split": 1010.0, "merge": 1030.0})
    reply = Answer.success(request_id, "faq", {}) if ok else Answer.failure(request_id, "too_large", "big")
    return Output("answers", request_id.encode(), reply.with_latency(headers).encode())


def test_an_interval_of_batches_and_deliveries_becomes_one_report() -> None:
    agg = Aggregator("merge", "merge-0", interval_s=1.0, started=100.0)
    agg.batch(3, 0.02, [0.01])
    dead = Output("dead-letters", b"r9", b"\xff", DeadLetterReason("merge", "invalid_request", "not JSON",
                                                                   "results[3]@7").to_list())  # fmt: skip
    agg.delivered([answer("a"), answer("b", ok=False), dead, Output("merge-state", b"a", None)], 0.003)
    assert not agg.due(100.5) and agg.due(101.0)
    report = agg.take(101.0)
    assert report is not None
    assert (report.records, report.batches, report.span_s) == (3, 1, 1.0)
    assert report.answers == {"ok": 1, "too_large": 1} and report.dead_letters == {"invalid_request": 1}
    assert report.latest_dead == [{"code": "invalid_request", "reason": "not JSON", "source": "results[3]@7",
                                   "key": "r9"}]  # fmt: skip
    assert report.hops_ms == {"filter": [4.0, 4.0], "split": [6.0, 6.0], "merge": [20.0, 20.0], TOTAL_HOP: [30.0, 30.0]}
    assert StageReport.decode(report.encode()) == report
    assert agg.take(102.0) is None, "an interval where nothing happened sends nothing"


def test_latency_samples_are_capped_per_hop() -> None:
    agg = Aggregator("merge", "merge-0", 1.0, 0.0)
    agg.delivered([answer(f"r{i}") for i in range(SAMPLES_PER_HOP * 3)], 0.0)
    report = agg.take(1.0)
    assert report is not None and len(report.hops_ms["merge"]) == SAMPLES_PER_HOP
    assert report.answers["ok"] == SAMPLES_PER_HOP * 3


@pytest.mark.parametrize("data", [b"", b"[]", b"{}", b"\xff", b'{"stage": "x"}'])
def test_bad_bytes_are_a_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError, match="telemetry: not a stage report"):
        StageReport.decode(data)


def test_percentiles_from_merged_bucket_counts() -> None:
    fast = histogram([4.0] * 98)
    slow = histogram([250.0, 900.0])
    both = merge_counts(merge_counts([], fast), slow)
    assert len(both) == len(BUCKETS_MS) and sum(both) == 100
    assert quantile(both, 0.5) == 5 and quantile(both, 0.99) == 300 and quantile(both, 1.0) == 1000
    assert quantile([0] * len(BUCKETS_MS), 0.5) is None
    assert error_rate({"ok": 3, "partial": 1}) == 0.25 and error_rate({}) == 0.0
