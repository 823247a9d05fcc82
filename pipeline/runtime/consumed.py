"""What the stage loop reads off consumed messages and assigned partitions.

Records from messages, the offsets a batch commits, partition names for the
log, and leaving a group for good: small functions over confluent-kafka's
types, kept apart from the loop (:mod:`pipeline.runtime.runner`) so that it
reads as the loop.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from confluent_kafka import Consumer, Message, TopicPartition

from pipeline.messages import header_list
from pipeline.records import Record
from pipeline.runtime.policies import CommitOrder

# A retired member waits at most this long for its partitions to be revoked before it closes anyway.
LEAVE_TIMEOUT_S = 3.0


def record_of(message: Message, topic: str) -> Record:
    """The stage's view of one consumed message of ``topic``."""
    return Record(
        topic=topic,
        partition=message.partition() or 0,
        offset=message.offset() or 0,
        key=message.key(),
        value=message.value(),
        headers=header_list(message.headers()),
        timestamp_ms=float(message.timestamp()[1]),
    )


def places(batch: Sequence[Message]) -> list[tuple[str, int, int]]:
    """Each message's (topic, partition, offset)."""
    return [(m.topic() or "", m.partition() or 0, m.offset() or 0) for m in batch]


def next_offsets(batch: Sequence[Message]) -> list[TopicPartition]:
    """The offsets to commit once ``batch`` is done: one past the last of each partition."""
    return [TopicPartition(t, p, offset) for (t, p), offset in CommitOrder.next_offsets(places(batch)).items()]


def partition_names(partitions: Sequence[TopicPartition]) -> str:
    return ", ".join(f"{p.topic}[{p.partition}]" for p in partitions) or "nothing"


def leave_group(consumer: Consumer, timeout_s: float = LEAVE_TIMEOUT_S) -> None:
    """Give up every partition now, for a member that is not coming back (issue 20 point 3).

    A static member (group.instance.id) that only closes keeps its
    partitions for session.timeout.ms, waiting for its successor: right
    for a restart, a 10 s stall of a tenth of the traffic for a member
    scaled down (measured: p99 10.6 s while scaling back). Unsubscribing
    and polling until the revocation is served makes the classic protocol
    hand them over at once (0.1 s measured); librdkafka 2.16 on KIP-848's
    protocol still keeps a static member's partitions for the session
    (docs/reliability.md). What is polled meanwhile is not processed: its
    offsets are not committed, so the next owner reads it again.
    """
    consumer.unsubscribe()
    deadline = time.monotonic() + timeout_s
    while consumer.assignment() and time.monotonic() < deadline:
        consumer.poll(0.1)
