"""The stage runner over a real broker: a batch slower than max.poll.interval.ms keeps its partitions."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from confluent_kafka import Consumer, Producer

from pipeline.records import Batching, Output, Record, StageLogic
from pipeline.runtime.config import consumer_config, producer_config
from pipeline.runtime.runner import StageRunner
from pipeline.settings import Settings
from pipeline.topics import TopicSpec
from tests.integration.harness import read_topic


def test_a_batch_slower_than_the_poll_interval_neither_rebalances_nor_repeats(
    settings: Settings, topics: dict[str, TopicSpec]
) -> None:
    # The shortest poll interval librdkafka allows next to a 10 s session timeout.
    settings = settings.replace(max_poll_interval_ms=10_000)
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


def test_partitions_taken_while_paused_flow_again_when_they_come_back(
    settings: Settings, topics: dict[str, TopicSpec]
) -> None:
    # Seen after `pipeline scale infer=2` from 3: partitions a paused member lost
    # and got back stayed paused (librdkafka keeps the flag) until a rebalance.
    # The handler holds its batch (so the member stays paused) until the
    # partitions are taken: a revocation first finishes the running batch.
    release = threading.Event()
    seen: list[bytes] = []

    def blocked(records: Sequence[Record]) -> list[Output]:
        release.wait(60)
        seen.extend(r.key or b"" for r in records)
        return [Output("filtered", r.key, r.value or b"") for r in records]

    producer = Producer(producer_config(settings, "test-paused"))
    partitions = topics["requests"].partitions

    def produce(tag: str) -> None:
        for i in range(partitions):
            producer.produce(settings.topic("requests"), key=f"{tag}-{i}", value=b"{}", partition=i)
        producer.flush(10)

    produce("before")
    runner = StageRunner(settings, "pausestage", "requests", StageLogic(blocked),
                         Batching(max_batch=1, max_in_flight=2))  # fmt: skip
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(stop,))
    thread.start()
    real_on_revoke = runner._on_revoke

    def on_revoke(consumer: object, partitions: list[object]) -> None:
        release.set()
        real_on_revoke(consumer, partitions)  # type: ignore[arg-type]

    runner._on_revoke = on_revoke  # type: ignore[method-assign,assignment]
    other = Consumer(consumer_config(settings, settings.group("pausestage"), "test-other"))
    try:
        deadline = time.monotonic() + 60
        while not (runner.paused and len(runner.consumer.assignment()) == partitions):
            assert time.monotonic() < deadline, "the member never paused with every partition"
            time.sleep(0.1)
        other.subscribe([settings.topic("requests")])  # takes partitions away, commits nothing
        while not other.assignment():
            assert time.monotonic() < deadline, "the second member got no partitions"
            other.poll(0.2)
        taken = {tp.partition for tp in other.assignment()}
        while runner.paused:  # the first member drains and unpauses
            assert time.monotonic() < deadline, "the member stayed paused"
            other.poll(0.2)
        other.close()  # leaves the group: the partitions go back
        produce("after")
        expected = {f"{tag}-{i}".encode() for tag in ("before", "after") for i in range(partitions)}
        deadline = time.monotonic() + 60
        while set(seen) != expected and time.monotonic() < deadline:
            time.sleep(0.2)
        missing = sorted(expected - set(seen))
        assert not missing, f"records of partitions {sorted(taken)} never ran: {missing}"
    finally:
        stop.set()
        release.set()
        thread.join(30)
