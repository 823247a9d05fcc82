"""The naive consumer ``pipeline bench`` holds the pipeline against.

What many first versions of a Kafka model service look like: one process
consumes one request, runs the model on it alone, produces the answer, waits
for the broker to acknowledge it and commits the request's offset, then takes
the next. It is at-least-once and correct, just slow: no batching, a round
trip to the broker per message.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from confluent_kafka import Consumer, Producer, TopicPartition

from pipeline.errors import BrokerError
from pipeline.runtime.config import consumer_config, producer_config
from pipeline.settings import Settings

Model = Callable[[bytes], bytes]  # request value -> answer value


def naive_consume(settings: Settings, model: Model, count: int, timeout_s: float) -> tuple[int, float]:
    """Process ``count`` records of ``requests`` one at a time; (processed, seconds from first to last)."""
    client_id = f"{settings.kafka.prefix}bench-naive-{uuid.uuid4().hex[:6]}"
    consumer = Consumer(consumer_config(settings, f"{settings.kafka.prefix}bench-naive", client_id))
    producer = Producer(producer_config(settings, client_id))
    consumer.subscribe([settings.topic("requests")])
    done, first, last = 0, 0.0, 0.0
    deadline = time.monotonic() + timeout_s
    try:
        while done < count and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                if error.fatal():
                    raise BrokerError(f"naive consumer: {error}")
                continue
            answer = model(message.value() or b"")
            producer.produce(settings.topic("answers"), key=message.key(), value=answer)
            if producer.flush(10):
                raise BrokerError("naive consumer: an answer was not acknowledged in 10 s")
            offset = TopicPartition(message.topic() or "", message.partition() or 0, (message.offset() or 0) + 1)
            consumer.commit(offsets=[offset], asynchronous=False)
            last = time.perf_counter()
            first = first or last
            done += 1
    finally:
        consumer.close()
    return done, last - first
