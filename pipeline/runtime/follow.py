"""Follow a whole compacted topic into a stage, like Kafka Streams' global table.

filter follows ``answer-cache``: every partition, from the beginning, then
whatever arrives, handed record by record to the stage's
:meth:`~pipeline.records.Hooks.followed` on this thread. No consumer group:
every member reads all of it. ``read_committed``, so an answer of an aborted
generate transaction is never served.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from pipeline.runtime.config import consumer_config
from pipeline.settings import Settings

log = logging.getLogger("pipeline.follow")

OnRecord = Callable[[bytes, bytes | None, float], None]
"""key, value (None: a tombstone), the record's timestamp in ms."""


class Follower:
    """A thread reading every partition of ``topic`` into ``on_record``."""

    def __init__(self, settings: Settings, topic: str, on_record: OnRecord) -> None:
        self.settings = settings
        self.topic = settings.topic(topic)
        self.on_record = on_record
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"follow-{topic}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)

    def _run(self) -> None:
        # The group id is never used (offsets are neither read nor committed) but librdkafka wants one.
        name = f"{self.settings.kafka.prefix}follow-{uuid.uuid4().hex[:8]}"
        consumer = Consumer(consumer_config(self.settings, name, name))
        try:
            while not self.stop.is_set():
                metadata = consumer.list_topics(self.topic, timeout=10)
                found = metadata.topics.get(self.topic)
                if found is not None and found.error is None and found.partitions:
                    break
                log.warning("cannot follow %s yet (not found); retrying", self.topic)
                self.stop.wait(5)
            else:
                return
            consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in found.partitions])
            count, began = 0, time.monotonic()
            while not self.stop.is_set():
                for message in consumer.consume(num_messages=500, timeout=0.2):
                    error = message.error()
                    if error is not None:
                        if error.code() != KafkaError._PARTITION_EOF:
                            log.warning("following %s: %s", self.topic, error)
                        continue
                    self.on_record(message.key() or b"", message.value(), float(message.timestamp()[1]))
                    count += 1
                if count and began:
                    log.info("following %s: %d records read in %.1f s", self.topic, count, time.monotonic() - began)
                    began = 0.0
        finally:
            consumer.close()
