"""filter predicts where a request's records will wait by computing their partitions itself
(pipeline.messages.partitioner); here the stage producers' real partitioner must agree, record for record."""

from __future__ import annotations

from confluent_kafka import Message, Producer

from pipeline.messages import part_key
from pipeline.messages.partitioner import partition_for
from pipeline.runtime.config import producer_config
from pipeline.settings import Settings
from pipeline.topics import TopicSpec


def test_python_murmur2_lands_where_librdkafka_puts_the_record(
    settings: Settings, topics: dict[str, TopicSpec]
) -> None:
    producer = Producer(producer_config(settings, "partitioner-test"))
    landed: dict[bytes, int] = {}

    def delivered(error: object, message: Message) -> None:
        assert error is None, error
        key = message.key()
        assert key is not None
        landed[key] = message.partition()

    keys = [f"req-{i}".encode() for i in range(100)]
    keys += [part_key(f"req-{i}", n).encode() for i in range(50) for n in (0, 1)]
    for name in ("filtered", "parts"):
        landed.clear()
        for key in keys:
            producer.produce(topics[name].topic, key=key, value=b"{}", on_delivery=delivered)
        assert producer.flush(30) == 0
        count = topics[name].partitions
        assert landed == {key: partition_for(key, count) for key in keys}
        assert len(set(landed.values())) == count
