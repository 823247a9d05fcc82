"""Read each stage's consumer group from the cluster: members, committed and end offsets, oldest waiting record.

Read-only and bounded (every admin call has a timeout), so ``pipeline status``
works against any cluster the settings reach. The age of the oldest waiting
record is read directly: the record at the committed offset of each lagging
partition (its timestamp), as kafka-lag-exporter's "lag in time" means.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from pipeline.errors import BrokerError
from pipeline.operations.status import GroupSnapshot, Member
from pipeline.runtime.config import admin_config, consumer_config
from pipeline.runtime.offsets import TIMEOUT_S, committed_offsets, end_offsets
from pipeline.settings import Settings


def snapshot(settings: Settings, stages: Iterable[tuple[str, str]], *, ages: bool = True) -> list[GroupSnapshot]:
    """One snapshot per (stage, source topic), taken now."""
    admin = AdminClient(admin_config(settings))
    stages = list(stages)
    topics = [settings.topic(source) for _, source in stages]
    try:
        metadata = admin.list_topics(timeout=TIMEOUT_S)
    except KafkaException as exc:
        raise BrokerError(f"cannot reach the cluster at {settings.kafka.bootstrap_servers}: {exc}") from exc
    partitions = {t: sorted(metadata.topics[t].partitions) for t in topics if t in metadata.topics}
    ends = end_offsets(admin, partitions)
    groups = [settings.group(stage) for stage, _ in stages]
    members = _members(admin, groups)
    snapshots = []
    for (stage, source), group in zip(stages, groups, strict=True):
        topic = settings.topic(source)
        committed = committed_offsets(admin, group, topic, partitions.get(topic, []))
        topic_ends = {p: ends.get((topic, p), 0) for p in partitions.get(topic, [])}
        snap = GroupSnapshot(stage, source, time.time(), committed, topic_ends, members.get(group, ()))
        if ages and snap.lag:
            age, markers = _oldest_age(settings, topic, committed, topic_ends)
            snap = GroupSnapshot(snap.stage, snap.source, snap.at, snap.committed, snap.ends, snap.members,
                                 age, markers)  # fmt: skip
        snapshots.append(snap)
    return snapshots


def _members(admin: AdminClient, groups: list[str]) -> dict[str, tuple[Member, ...]]:
    found: dict[str, tuple[Member, ...]] = {}
    for group, future in admin.describe_consumer_groups(groups, request_timeout=TIMEOUT_S).items():
        try:
            description = future.result(TIMEOUT_S)
        except KafkaException:
            continue  # a group that does not exist yet has no members
        found[group] = tuple(
            Member(m.client_id, m.host, tuple(sorted(tp.partition for tp in (m.assignment.topic_partitions or []))))
            for m in description.members
        )
    return found


def _oldest_age(settings: Settings, topic: str, committed: dict[int, int],
                ends: dict[int, int]) -> tuple[float | None, frozenset[int]]:  # fmt: skip
    """Seconds since the oldest record not yet consumed was written (None if none could be read in time), and
    the partitions where only a transaction marker is past the committed offset (one offset, no record)."""
    lagging = [TopicPartition(topic, p, max(committed.get(p, -1), 0)) for p, end in ends.items()
               if end > max(committed.get(p, -1), 0)]  # fmt: skip
    if not lagging:
        return 0.0, frozenset()
    reader = f"{settings.kafka.prefix}pipeline-status"
    consumer = Consumer({**consumer_config(settings, reader, reader), "enable.partition.eof": False})
    oldest: float | None = None
    try:
        consumer.assign(lagging)
        waiting = {tp.partition for tp in lagging}
        deadline = time.monotonic() + 2.0
        while waiting and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=len(waiting), timeout=0.2):
                if message.error() is not None or message.partition() not in waiting:
                    continue
                waiting.discard(message.partition())
                stamp = message.timestamp()[1] / 1000.0
                oldest = stamp if oldest is None else min(oldest, stamp)
    finally:
        consumer.close()
    # A committed transaction ends with a marker at the end of each partition it
    # wrote: a quiet exactly_once stage's source is one offset "behind" forever.
    markers = frozenset(p for p in waiting if ends[p] - max(committed.get(p, -1), 0) == 1)
    if oldest is None:
        return (0.0 if markers == {tp.partition for tp in lagging} else None), markers
    return max(0.0, time.time() - oldest), markers
