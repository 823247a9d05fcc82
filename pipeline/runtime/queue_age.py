"""The queues after filter as they stand: per partition, committed and end offsets and the head's age.

A request whose deadline falls before the stages after filter can reach it
is better answered ``deadline_exceeded`` at once than after queueing through
infer (issue 7 point 4). The wait ahead of a new request is predicted from the
queues themselves (``pipeline.stages.filter.queue_wait``): for each later stage and
each partition of its source topic, the stage's committed offset, the end
offset, and the age of the oldest record not yet consumed. One
admin client and one assign-only consumer are kept for the member's life;
every call is bounded by a timeout.
"""

from __future__ import annotations

import contextlib
import time
import uuid

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from pipeline.runtime.config import admin_config, consumer_config
from pipeline.runtime.offsets import committed_offsets, end_offsets
from pipeline.settings import Settings
from pipeline.stages.filter.queue_wait import PartitionQueue, Reading

READ_TIMEOUT_S = 1.0


class QueueAges:
    """Per stage, every partition of its source: committed and end offsets, the head's age (0 where nothing waits)."""

    def __init__(self, settings: Settings, stages: list[tuple[str, str]]) -> None:
        self.settings = settings
        self.stages = stages
        self.admin = AdminClient(admin_config(settings))
        reader = f"{settings.kafka.prefix}filter-queue-ages-{uuid.uuid4().hex[:6]}"
        # An assign-only consumer (its group is never joined or committed).
        self.consumer = Consumer({**consumer_config(settings, reader, reader), "enable.partition.eof": False})

    def read(self) -> Reading:
        """Per stage and partition, committed and end offsets and how long the head waited (KafkaException when
        unreachable)."""
        topics = [self.settings.topic(source) for _, source in self.stages]
        metadata = self.admin.list_topics(timeout=READ_TIMEOUT_S * 5)
        partitions = {t: sorted(metadata.topics[t].partitions) for t in topics if t in metadata.topics}
        ends = end_offsets(self.admin, partitions)
        offsets: dict[str, dict[int, tuple[int, int]]] = {}
        ages: dict[tuple[str, int], float] = {}
        heads: dict[tuple[str, int], str] = {}
        assign: list[TopicPartition] = []
        for stage, source in self.stages:
            topic = self.settings.topic(source)
            committed = committed_offsets(self.admin, self.settings.group(stage), topic, partitions.get(topic, []))
            offsets[stage] = {}
            for p in partitions.get(topic, []):
                start, end = committed.get(p, -1), ends.get((topic, p), 0)
                offsets[stage][p] = (start, end)
                if end > max(start, 0):
                    heads[(topic, p)] = stage
                    assign.append(TopicPartition(topic, p, max(start, 0)))
        if assign:
            self.consumer.assign(assign)
            waiting = set(heads)
            deadline = time.monotonic() + READ_TIMEOUT_S
            while waiting and time.monotonic() < deadline:
                for message in self.consumer.consume(num_messages=len(waiting), timeout=0.1):
                    key = (message.topic(), message.partition())
                    if message.error() is not None or key not in waiting:
                        continue
                    waiting.discard(key)
                    ages[(heads[key], key[1])] = max(0.0, time.time() - message.timestamp()[1] / 1000.0)
            # Only a transaction marker past the committed offset: nothing waits there.
            for key in waiting:
                start, end = offsets[heads[key]][key[1]]
                if end - max(start, 0) <= 1:
                    ages[(heads[key], key[1])] = 0.0
            self.consumer.unassign()
        return {  # a lagging head not read in time: age None (unknown)
            stage: {
                p: PartitionQueue(start, end, ages.get((stage, p), None if end > max(start, 0) else 0.0))
                for p, (start, end) in found.items()
            }
            for stage, found in offsets.items()
        }

    def close(self) -> None:
        with contextlib.suppress(KafkaException):
            self.consumer.close()
