"""The queues after filter as they stand: per partition, committed and end offsets and the head's age.

A request whose deadline falls before the stages after filter can reach it
is better answered ``deadline_exceeded`` at once than after queueing through
infer (issue 7 point 4). The wait ahead of a new request is predicted from the
queues themselves (``pipeline.stages.filter.queue_wait``): for each later stage and
each partition of its source topic, the stage's committed offset, the end
offset, and the age of the oldest record not yet consumed. Consumers only,
kept for the member's life, every call bounded by a timeout: an assign-only
one reads the topics' metadata, their end offsets and the heads, and one per
stage after filter, carrying that stage's group id but never joining the
group, reads what the group committed. Not the admin client: its
ListConsumerGroupOffsets aborted the filter member inside librdkafka 2.16
(``rd_kafka_enq_once_del_source_return: Assertion `eonce->refcnt > 0'
failed``) when the group's coordinator broker died on a three-broker cluster
(issue 20), where the consumer's own offset fetch rides the same failover.
"""

from __future__ import annotations

import contextlib
import time
import uuid

from confluent_kafka import Consumer, KafkaException, TopicPartition

from pipeline.runtime.config import consumer_config
from pipeline.settings import Settings
from pipeline.stages.filter.queue_wait import UNREAD, PartitionQueue, Reading

READ_TIMEOUT_S = 1.0
OFFSETS_TIMEOUT_S = 10.0
OFFSET_LATEST = -1  # as a ListOffsets timestamp: the end offset


class QueueAges:
    """Per stage, every partition of its source: committed and end offsets, the head's age (0 where nothing waits)."""

    def __init__(self, settings: Settings, stages: list[tuple[str, str]]) -> None:
        self.settings = settings
        self.stages = stages
        reader = f"{settings.kafka.prefix}filter-queue-ages-{uuid.uuid4().hex[:6]}"
        # An assign-only consumer (its group is never joined or committed).
        self.consumer = Consumer({**consumer_config(settings, reader, reader), "enable.partition.eof": False})
        # Per stage, a consumer with the stage's group id that only asks what the group committed:
        # it never subscribes (so never joins) and never commits.
        self.groups = {
            stage: Consumer(
                {**consumer_config(settings, settings.group(stage), f"{reader}-{stage}"), "enable.auto.commit": False}
            )
            for stage, _ in stages
        }

    def read(self) -> Reading:
        """Per stage and partition, committed and end offsets and how long the head waited (KafkaException when
        unreachable)."""
        topics = [self.settings.topic(source) for _, source in self.stages]
        metadata = self.consumer.list_topics(timeout=READ_TIMEOUT_S * 5)
        partitions = {t: sorted(metadata.topics[t].partitions) for t in topics if t in metadata.topics}
        ends = self._ends(partitions)
        offsets: dict[str, dict[int, tuple[int, int]]] = {}
        ages: dict[tuple[str, int], float] = {}
        heads: dict[tuple[str, int], str] = {}
        assign: list[TopicPartition] = []
        for stage, source in self.stages:
            topic = self.settings.topic(source)
            committed = self._committed(stage, topic, partitions.get(topic, []))
            offsets[stage] = {}
            for p in partitions.get(topic, []):
                start, end = committed.get(p, UNREAD), ends.get((topic, p), 0)
                offsets[stage][p] = (start, end)
                if start != UNREAD and end > max(start, 0):
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

    def _ends(self, partitions: dict[str, list[int]]) -> dict[tuple[str, int], int]:
        """The end offset of each (topic, partition): ListOffsets for the latest (timestamp -1), in one call."""
        request = [TopicPartition(t, p, OFFSET_LATEST) for t, ps in partitions.items() for p in ps]
        if not request:
            return {}
        found = self.consumer.offsets_for_times(request, timeout=OFFSETS_TIMEOUT_S)
        return {(tp.topic, tp.partition): tp.offset for tp in found if tp.error is None}

    def _committed(self, stage: str, topic: str, partitions: list[int]) -> dict[int, int]:
        """The offsets ``stage``'s group committed on ``topic`` (negative where it committed nothing; UNREAD each
        where they cannot be read, which is not the same: see pipeline.stages.filter.queue_wait)."""
        if not partitions:
            return {}  # the topic does not exist (yet)
        try:
            found = self.groups[stage].committed([TopicPartition(topic, p) for p in partitions], OFFSETS_TIMEOUT_S)
        except KafkaException:
            return dict.fromkeys(partitions, UNREAD)
        return {tp.partition: tp.offset if tp.error is None else UNREAD for tp in found}

    def close(self) -> None:
        for consumer in (self.consumer, *self.groups.values()):
            with contextlib.suppress(KafkaException, RuntimeError):
                consumer.close()
