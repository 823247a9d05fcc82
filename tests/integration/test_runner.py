"""The stage runner over a real broker: a batch slower than max.poll.interval.ms keeps its partitions."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Sequence

from confluent_kafka import Producer

from pipeline.kafka.config import producer_config
from pipeline.kafka.runner import StageRunner
from pipeline.records import Batching, Output, Record, StageLogic
from pipeline.settings import Settings
from pipeline.topics import TopicSpec
from tests.integration.harness import read_topic


def test_a_batch_slower_than_the_poll_interval_neither_rebalances_nor_repeats(
    settings: Settings, topics: dict[str, TopicSpec]
) -> None:
    # The shortest poll interval librdkafka allows next to a 10 s session timeout.
    settings = dataclasses.replace(settings, max_poll_interval_ms=10_000)
    seen: list[bytes] = []

    def slow_handler(records: Sequence[Record]) -> list[Output]:
        seen.extend(r.key or b"" for r in records)
        time.sleep(13)  # longer than max.poll.interval.ms
        return [Output("filtered", r.key, r.value or b"") for r in records]

    producer = Producer(producer_config(settings, "test-slow"))
    for i in range(5):
        producer.produce(settings.topic("requests"), key=f"slow-{i}", value=b"{}")
    producer.flush(10)

    runner = StageRunner(settings, "slowstage", "requests", StageLogic(slow_handler), Batching(max_batch=100))
    revoked: list[object] = []
    real_on_revoke = runner._on_revoke

    def on_revoke(consumer: object, partitions: list[object]) -> None:
        revoked.extend(partitions)  # record, then do what the runner does
        real_on_revoke(consumer, partitions)  # type: ignore[arg-type]

    runner._on_revoke = on_revoke  # type: ignore[method-assign,assignment]
    real_on_lost = runner._on_lost

    def on_lost(consumer: object, partitions: list[object]) -> None:
        revoked.extend(partitions)
        real_on_lost(consumer, partitions)  # type: ignore[arg-type]

    runner._on_lost = on_lost  # type: ignore[method-assign,assignment]
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(stop,))
    thread.start()
    try:
        outputs = read_topic(settings, "filtered", expect=5, timeout_s=90)
        time.sleep(3)  # a rebalance after the slow batch would show up here
        revoked_while_running = list(revoked)
    finally:
        stop.set()  # closing the consumer revokes everything: not counted
        thread.join(30)
    assert sorted(m.key() for m in outputs) == [f"slow-{i}".encode() for i in range(5)]
    assert sorted(seen) == sorted(m.key() for m in outputs), "each record handled exactly once"
    assert revoked_while_running == [], "the member lost its partitions while the batch ran"
