"""A record produced with the pipeline's producer settings comes back intact through its consumer settings."""

from __future__ import annotations

import time
import uuid

from confluent_kafka import Consumer, Producer

from pipeline.runtime.config import consumer_config, producer_config
from pipeline.settings import Settings
from pipeline.topics import TopicSpec


def test_key_value_and_headers_survive_a_round_trip(settings: Settings, topics: dict[str, TopicSpec]) -> None:
    topic = topics["requests"].topic
    key = f"req-{uuid.uuid4().hex}".encode()
    value = '{"task": "embed", "text": "héllo"}'.encode()
    headers: list[tuple[str, str | bytes | None]] = [
        ("pipeline-deadline-ms", b"1767225600000"),
        ("traceparent", b"00-" + b"a" * 32 + b"-" + b"b" * 16 + b"-01"),
        ("tenant", b"\x00binary\xff"),  # clients' own headers are opaque bytes
    ]

    producer = Producer(producer_config(settings, "roundtrip-test"))
    delivered = []
    producer.produce(topic, value=value, key=key, headers=headers, on_delivery=lambda err, msg: delivered.append(err))
    assert producer.flush(15) == 0
    assert delivered == [None]

    consumer = Consumer(consumer_config(settings, settings.group("roundtrip"), "roundtrip-test"))
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 30
        message = None
        while message is None and time.monotonic() < deadline:
            polled = consumer.poll(0.5)
            if polled is not None:
                assert polled.error() is None, polled.error()
                message = polled
        assert message is not None, f"nothing consumed from {topic} in 30 s"
        assert message.key() == key
        assert message.value() == value
        assert message.headers() == headers
        consumer.commit(message=message, asynchronous=False)
    finally:
        consumer.close()
