"""Restore a stage's state table from its changelog topic: the Kafka half of :class:`~pipeline.records.StateTable`.

A changelog is a compacted topic with the same partition count as the stage's
source topic, partition for partition: the state of source partition *p* is
in changelog partition *p*. The runner writes every change through to it in
the transaction that commits the batch that made the change (see
``StateTable.put``), and reads it back here, ``read_committed``, before any
record of a newly assigned partition is handled. So after a crash at any
point the restored table is exactly the one that goes with the committed
offsets. merge's gathers use it today; generate's sessions will too.
"""

from __future__ import annotations

import logging
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from pipeline.errors import BrokerError
from pipeline.runtime.config import consumer_config
from pipeline.settings import Settings

log = logging.getLogger("pipeline.table")

# How long restoring may wait for a dead member's open transaction to end.
RESTORE_TIMEOUT_S = 120.0

Rows = dict[bytes, bytes]
# Errors that mean "the partition has no leader yet" (new topics, a restarting
# broker); librdkafka does not flag all of them retriable.
NOT_YET = frozenset(
    {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._TIMED_OUT,
        KafkaError._TRANSPORT,
    }
)


def restore(settings: Settings, changelog: str, group: str, partitions: list[int]) -> dict[int, Rows]:
    """Read the changelog partitions to their end: each partition's rows as last committed."""
    tables: dict[int, Rows] = {p: {} for p in partitions}
    if not partitions:
        return tables
    began = time.monotonic()
    topic = settings.topic(changelog)
    restorer = f"{group}-restore"
    consumer = Consumer(consumer_config(settings, restorer, restorer))
    try:
        deadline = time.monotonic() + RESTORE_TIMEOUT_S
        ends: dict[int, int] = {}
        for partition in partitions:
            low, high = _watermarks(consumer, TopicPartition(topic, partition), deadline)
            if high > low:
                ends[partition] = high
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        while ends:
            if time.monotonic() > deadline:
                raise BrokerError(f"restoring {topic} partitions {sorted(ends)} took over {RESTORE_TIMEOUT_S:.0f} s")
            for message in consumer.consume(num_messages=1000, timeout=0.2):
                if message.error() is not None:
                    continue
                table = tables[message.partition() or 0]
                key = message.key() or b""
                value = message.value()
                if value is None:
                    table.pop(key, None)
                else:
                    table[key] = value
            # Transaction markers and aborted records are skipped but advance
            # the position, so the end is reached once nothing is left open.
            for tp in consumer.position([TopicPartition(topic, p) for p in ends]):
                if tp.offset >= ends[tp.partition]:
                    ends.pop(tp.partition)
    finally:
        consumer.close()
    rows = sum(len(t) for t in tables.values())
    log.info("restored %d rows of %s%s in %.2f s", rows, changelog, partitions, time.monotonic() - began)
    return tables


def _watermarks(consumer: Consumer, tp: TopicPartition, deadline: float) -> tuple[int, int]:
    """A changelog partition's low and high offsets, asked again while the broker says "not yet".

    Just after topics are created, or while a broker restarts, the partition
    may have no leader for a moment (NOT_LEADER_FOR_PARTITION, timeouts).
    """
    while True:
        try:
            low, high = consumer.get_watermark_offsets(tp, timeout=5, cached=False)
            return int(low), int(high)
        except KafkaException as exc:
            error = exc.args[0]
            if not (error.retriable() or error.code() in NOT_YET) or time.monotonic() > deadline:
                raise BrokerError(f"cannot read the offsets of {tp.topic}[{tp.partition}]: {error}") from exc
            log.warning("offsets of %s[%d] not available yet (%s); asking again", tp.topic, tp.partition, error)
            time.sleep(0.5)
