"""Small in-memory stand-ins for confluent-kafka's Consumer and Producer, for unit tests of the runner.

They implement only what :class:`~pipeline.runtime.runner.StageRunner` calls,
with Kafka's semantics where the runner depends on them: positions advance as
messages are returned and move back on ``seek``; paused partitions return
nothing; rebalance callbacks run inside ``poll``; a transaction's records and
offsets become visible only on ``commit_transaction``. Integration tests never
use these: they run against a real broker.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from pipeline.runtime.clients import Clients


@dataclass
class FakeMessage:
    _topic: str
    _partition: int
    _offset: int
    _key: bytes | None
    _value: bytes | None
    _headers: list[tuple[str, bytes]] = field(default_factory=list)
    _timestamp: int = 0

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> list[tuple[str, bytes]]:
        return self._headers

    def timestamp(self) -> tuple[int, int]:
        return (1, self._timestamp)

    def error(self) -> None:
        return None


class FakeConsumer:
    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.logs: dict[int, list[FakeMessage]] = defaultdict(list)
        self.positions: dict[int, int] = {}
        self.assigned: list[int] = []
        self.paused: set[int] = set()
        self.events: list[tuple[str, list[int]]] = []  # rebalances to deliver on the next poll
        self.callbacks: dict[str, Callable[..., None]] = {}
        self.committed: dict[int, int] = {}
        self.closed = False
        self.reachable = True  # False: the brokers are away (metadata requests time out)

    # -- test controls --------------------------------------------------------------
    def add(self, partition: int, key: bytes, value: bytes, headers: list[tuple[str, bytes]] | None = None) -> None:
        log = self.logs[partition]
        log.append(FakeMessage(self.topic, partition, len(log), key, value, headers or []))

    def rebalance(self, kind: str, partitions: list[int]) -> None:
        """``assign``, ``revoke`` or ``lost``, delivered inside the next poll."""
        self.events.append((kind, partitions))

    # -- the Consumer API the runner uses ----------------------------------------------
    def subscribe(self, topics: list[str], **callbacks: Callable[..., None]) -> None:
        self.callbacks = callbacks

    def poll(self, timeout: float) -> FakeMessage | None:
        while self.events:
            kind, partitions = self.events.pop(0)
            tps = [TopicPartition(self.topic, p) for p in partitions]
            if kind == "assign":
                for p in partitions:
                    self.positions[p] = self.committed.get(p, 0)
                self.callbacks["on_assign"](self, tps)
                if not set(partitions) <= set(self.assigned):
                    self.incremental_assign(tps)  # as confluent-kafka does when the callback did not
            else:
                self.callbacks["on_revoke" if kind == "revoke" else "on_lost"](self, tps)
                self.assigned = [p for p in self.assigned if p not in partitions]
        batch = self.consume(1, timeout)
        return batch[0] if batch else None

    def consume(self, num_messages: int, timeout: float) -> list[FakeMessage]:
        out: list[FakeMessage] = []
        for p in self.assigned:
            if p in self.paused:
                continue
            log = self.logs[p]
            while self.positions[p] < len(log) and len(out) < num_messages:
                out.append(log[self.positions[p]])
                self.positions[p] += 1
        return out

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(self.topic, p) for p in self.assigned]

    def incremental_assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned += [tp.partition for tp in partitions if tp.partition not in self.assigned]

    # Like librdkafka, a partition's pause flag is kept when it is revoked.
    def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused |= {tp.partition for tp in partitions}

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.paused -= {tp.partition for tp in partitions}

    def seek(self, tp: TopicPartition) -> None:
        self.positions[tp.partition] = tp.offset

    def commit(self, offsets: list[TopicPartition], asynchronous: bool = True) -> None:
        self.committed.update({tp.partition: tp.offset for tp in offsets})

    def consumer_group_metadata(self) -> str:
        return "group-metadata"

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> object:
        if not self.reachable:
            raise KafkaException(KafkaError(KafkaError._TRANSPORT, "Failed to get metadata: Broker transport failure"))
        return object()

    def close(self) -> None:
        self.closed = True


class FakeProducer:
    def __init__(self, consumer: FakeConsumer) -> None:
        self.consumer = consumer  # offsets sent to a transaction are committed to it
        self.pending: list[tuple[str, bytes | None, bytes | None, int]] = []
        self.pending_offsets: list[TopicPartition] = []
        self.committed: list[tuple[str, bytes | None, bytes | None, int]] = []
        self.fail_commits = 0  # the next N commits fail with an abortable error
        self.aborts = 0
        self.refused: set[str] = set()  # topics an ACL refuses: their records fail with TOPIC_AUTHORIZATION_FAILED
        self.refused_now: set[str] = set()  # refused in produce() itself (the metadata already said so)
        self.reports: list[tuple[Any, FakeMessage]] = []  # (on_delivery, message) not yet reported
        self.failed = 0  # records of this transaction that were refused

    def init_transactions(self, timeout: float) -> None:
        pass

    def begin_transaction(self) -> None:
        self.pending, self.pending_offsets, self.failed = [], [], 0

    def produce(self, topic: str, key: bytes | None = None, value: bytes | None = None, headers: Any = None,
                partition: int = -1, on_delivery: Any = None) -> None:  # fmt: skip
        if topic in self.refused_now:
            raise KafkaException(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED, "Unable to produce message"))
        if topic in self.refused:
            self.failed += 1
            self.reports.append((on_delivery, FakeMessage(topic, max(partition, 0), -1, key, value)))
            return
        self.pending.append((topic, key, value, partition))

    def poll(self, timeout: float) -> int:
        """Serve the delivery reports of refused records (accepted ones report nothing here)."""
        reports, self.reports = self.reports, []
        denied = KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED, "Broker: Topic authorization failed")
        for on_delivery, message in reports:
            if on_delivery is not None:
                on_delivery(denied, message)
        return len(reports)

    def flush(self, timeout: float) -> int:
        self.poll(0)
        self.committed += self.pending
        self.pending = []
        return 0

    def send_offsets_to_transaction(self, offsets: list[TopicPartition], metadata: Any, timeout: float) -> None:
        self.pending_offsets = list(offsets)

    def commit_transaction(self, timeout: float) -> None:
        if self.failed:  # as librdkafka: the records' reports say why, the commit only that some failed
            self.poll(0)
            raise KafkaException(KafkaError(KafkaError._INCONSISTENT, f"{self.failed} message(s) failed delivery",
                                            txn_requires_abort=True))  # fmt: skip
        if self.fail_commits:
            self.fail_commits -= 1
            raise KafkaException(KafkaError(KafkaError._STATE, "fenced by a rebalance", txn_requires_abort=True))
        self.committed += self.pending
        self.consumer.commit(self.pending_offsets)
        self.pending, self.pending_offsets = [], []

    def abort_transaction(self, timeout: float) -> None:
        self.aborts += 1
        self.pending, self.pending_offsets = [], []


def fake_clients(
    topic: str, rows: dict[int, dict[bytes, bytes]] | None = None
) -> tuple[Clients, FakeConsumer, FakeProducer]:
    """Clients for a runner on ``topic``; ``restore`` answers with ``rows`` and records each call."""
    consumer = FakeConsumer(topic)
    producer = FakeProducer(consumer)
    side = FakeProducer(consumer)
    restored: list[list[int]] = []

    def restore(partitions: list[int]) -> dict[int, dict[bytes, bytes]]:
        restored.append(list(partitions))
        return {p: dict((rows or {}).get(p, {})) for p in partitions}

    clients = Clients(consumer=consumer, producer=lambda: producer, side=lambda: side, restore=restore)
    clients.restored = restored  # type: ignore[attr-defined]
    return clients, consumer, producer
