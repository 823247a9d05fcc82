"""pipeline status against the real broker: lag in records and seconds, and the state of a group."""

from __future__ import annotations

import time

from confluent_kafka import Consumer, Producer, TopicPartition

from pipeline.operations.lag import snapshot
from pipeline.operations.status import compare
from pipeline.runtime.config import consumer_config, producer_config
from pipeline.settings import Settings
from pipeline.topics import TopicSpec


def test_status_sees_waiting_records_then_a_group_that_caught_up(
    settings: Settings, topics: dict[str, TopicSpec]
) -> None:
    producer = Producer(producer_config(settings, "status-test"))
    for i in range(6):
        producer.produce(settings.topic("requests"), key=f"s{i}", value=b"{}")
    producer.flush(10)
    time.sleep(1.5)
    before = snapshot(settings, [("filter", "requests")], ages=False)
    after = snapshot(settings, [("filter", "requests")])
    [status] = [compare(b, a) for b, a in zip(before, after, strict=True)]
    assert status.lag == 6 and status.state == "stalled" and status.members == ()
    assert status.lag_s is not None and status.lag_s >= 1.0, "the oldest waiting record is over a second old"

    # A consumer of the filter group commits everything: the group has caught up.
    group = settings.group("filter")
    consumer = Consumer(consumer_config(settings, group, "status-test-consumer"))
    topic = settings.topic("requests")
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
    consumer.commit(offsets=[TopicPartition(topic, p, end) for p, end in ends.items()], asynchronous=False)
    consumer.close()
    later = snapshot(settings, [("filter", "requests")])
    status = compare(after[0], later[0])
    assert status.lag == 0 and status.consume_rate > 0 and status.drain_s == 0.0
