"""How long the record at the head of each partition of a stage's queue has waited: for filter's shedding.

A request whose deadline falls before the stages after filter can reach it
is better answered ``deadline_exceeded`` at once than after queueing through
infer (issue 7 point 4). The wait ahead of a new request is read from the
queues themselves: for each later stage, the age of the oldest record not yet
consumed (committed offset) in each partition of its source topic. One
admin client and one assign-only consumer are kept for the member's life;
every call is bounded by a timeout.
"""

from __future__ import annotations

import contextlib
import time
import uuid

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from pipeline.kafka.config import admin_config, consumer_config
from pipeline.kafka.lag import _committed, _end_offsets
from pipeline.settings import Settings

READ_TIMEOUT_S = 1.0


class QueueAges:
    """Per stage, the head-of-queue age of every partition of its source (0 where nothing waits)."""

    def __init__(self, settings: Settings, stages: list[tuple[str, str]]) -> None:
        self.settings = settings
        self.stages = stages
        self.admin = AdminClient(admin_config(settings))
        reader = f"{settings.prefix}filter-queue-ages-{uuid.uuid4().hex[:6]}"
        # An assign-only consumer (its group is never joined or committed).
        self.consumer = Consumer({**consumer_config(settings, reader, reader), "enable.partition.eof": False})

    def read(self) -> dict[str, list[float]]:
        """Seconds each partition's oldest unconsumed record has waited, per stage (KafkaException when unreachable)."""
        topics = [self.settings.topic(source) for _, source in self.stages]
        metadata = self.admin.list_topics(timeout=READ_TIMEOUT_S * 5)
        partitions = {t: sorted(metadata.topics[t].partitions) for t in topics if t in metadata.topics}
        ends = _end_offsets(self.admin, partitions)
        ages: dict[str, list[float]] = {}
        heads: dict[tuple[str, int], str] = {}
        assign: list[TopicPartition] = []
        for stage, source in self.stages:
            topic = self.settings.topic(source)
            committed = _committed(self.admin, self.settings.group(stage), topic, partitions.get(topic, []))
            ages[stage] = []
            for p in partitions.get(topic, []):
                start = max(committed.get(p, -1), 0)
                if ends.get((topic, p), 0) > start:
                    heads[(topic, p)] = stage
                    assign.append(TopicPartition(topic, p, start))
                else:
                    ages[stage].append(0.0)
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
                    ages[heads[key]].append(max(0.0, time.time() - message.timestamp()[1] / 1000.0))
            # Only a transaction marker past the committed offset: nothing waits there.
            for key in waiting:
                ages[heads[key]].append(0.0)
            self.consumer.unassign()
        return ages

    def close(self) -> None:
        with contextlib.suppress(KafkaException):
            self.consumer.close()
