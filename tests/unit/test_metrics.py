"""Members' Prometheus metrics: what the runner records, under Prometheus names."""

from __future__ import annotations

from prometheus_client import REGISTRY, generate_latest

from pipeline.messages import Answer, DeadLetterReason
from pipeline.models.batching import count_tokens
from pipeline.records import Output
from pipeline.runtime.metrics import StageMetrics


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_batch_and_its_delivery_are_counted_by_stage_topic_code_and_status() -> None:
    metrics = StageMetrics("mtest")
    metrics.batch(3, 0.02, [0.005, 0.010, 0.2])
    ok = Output("answers", b"a", Answer.success("a", "faq", {}).encode())
    failed = Output("answers", b"b", Answer.failure("b", "too_large", "big").encode())
    dead = Output("dead-letters", b"b", b"...", DeadLetterReason("mtest", "too_large", "big", "x[0]@1").to_list())
    metrics.delivered([ok, failed, dead], 0.004)
    metrics.flow(7, paused=True)
    count_tokens("mtest", real=90, padding=30)
    assert value("pipeline_records_in_total", stage="mtest") == 3
    assert value("pipeline_records_out_total", stage="mtest", topic="answers") == 2
    assert value("pipeline_answers_total", stage="mtest", status="ok") == 1
    assert value("pipeline_answers_total", stage="mtest", status="too_large") == 1
    assert value("pipeline_dead_letters_total", stage="mtest", code="too_large") == 1
    assert value("pipeline_record_wait_seconds_count", stage="mtest") == 3
    assert value("pipeline_commit_seconds_count", stage="mtest") == 1
    assert value("pipeline_in_flight_records", stage="mtest") == 7 and value("pipeline_paused", stage="mtest") == 1
    assert value("pipeline_tokens_total", stage="mtest", kind="padding") == 30
    assert b'pipeline_handler_seconds_bucket{le="0.025",stage="mtest"} 1.0' in generate_latest(REGISTRY)
