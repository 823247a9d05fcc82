"""Committed and end offsets of a group's partitions, read through the admin client, bounded.

The runtime's queue probe (:mod:`pipeline.runtime.queue_age`) and the
operators' lag reading (:mod:`pipeline.operations.lag`) both use them.
"""

from __future__ import annotations

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

TIMEOUT_S = 10.0


def end_offsets(admin: AdminClient, partitions: dict[str, list[int]]) -> dict[tuple[str, int], int]:
    """The end offset of each (topic, partition)."""
    request = {TopicPartition(t, p): OffsetSpec.latest() for t, ps in partitions.items() for p in ps}
    if not request:
        return {}
    ends: dict[tuple[str, int], int] = {}
    for tp, future in admin.list_offsets(request, request_timeout=TIMEOUT_S).items():
        ends[(tp.topic, tp.partition)] = future.result(TIMEOUT_S).offset
    return ends


def committed_offsets(admin: AdminClient, group: str, topic: str, partitions: list[int]) -> dict[int, int]:
    """The offsets ``group`` committed on ``topic``'s partitions (-1 each when they cannot be read)."""
    if not partitions:
        return {}  # the topic does not exist (yet)
    request = [ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in partitions])]
    try:
        result = admin.list_consumer_group_offsets(request, request_timeout=TIMEOUT_S)[group].result(TIMEOUT_S)
    except KafkaException:
        return dict.fromkeys(partitions, -1)
    return {tp.partition: tp.offset for tp in result.topic_partitions}
