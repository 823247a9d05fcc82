"""A load generator and answer counter that speak only Kafka, for the chaos suite.

It uses the pipeline from outside, as any client would: raw request JSON
produced to ``requests`` (or raw bytes to any topic, for the fuzz corpus) and
a ``read_committed`` reader of ``answers`` that counts every answer by id. It
never uses :class:`pipeline.client.Client`, so what it measures does not
depend on the project's own client code.

* :class:`Sender` produces and remembers, for each record the broker
  acknowledged, when it was produced; records the broker refused (too large,
  or undeliverable within the timeout) are kept apart with the reason.
* :class:`AnswerReader` reads ``answers`` from the offsets it found at start
  and keeps every arrival (id, status, code, time), so duplicates are seen.
* :func:`read_all` reads a whole topic (dead letters) once.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from pipeline.errors import BrokerError, DecodeError
from pipeline.messages import Answer, HeaderList, header_list, kafka_headers
from pipeline.runtime.config import load_consumer_config, load_producer_config
from pipeline.settings import Settings


@dataclass(frozen=True, slots=True)
class Arrival:
    """One answer as the reader saw it."""

    id: str
    status: str
    code: str | None
    at: float  # time.time() when read


@dataclass
class Sender:
    """Produces records and keeps what the broker acknowledged or refused."""

    settings: Settings
    acked: dict[str, float] = field(default_factory=dict)  # id -> time.time() at produce
    refused: dict[str, str] = field(default_factory=dict)  # id -> why
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        client_id = f"{self.settings.kafka.prefix}chaos-load-{uuid.uuid4().hex[:6]}"
        self.producer = Producer(load_producer_config(self.settings, client_id))

    def send(
        self,
        ident: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        headers: HeaderList | None = None,
        topic: str = "requests",
        partition: int | None = None,
        key_is_ident: bool = True,
    ) -> None:
        """Produce one record; ``ident`` is how it is counted (usually the request id).

        The key is ``ident`` unless ``key_is_ident`` is false, then ``key`` as given (None too).
        """
        produced = time.time()

        def delivered(error: KafkaError | None, _message: Message) -> None:
            with self.lock:
                if error is None:
                    self.acked[ident] = produced
                else:
                    self.refused[ident] = error.str()

        while True:
            try:
                self.producer.produce(
                    self.settings.topic(topic),
                    key=ident.encode() if key_is_ident else key,
                    value=value,
                    headers=kafka_headers(headers or []),
                    partition=-1 if partition is None else partition,
                    on_delivery=delivered,
                )
                break
            except BufferError:
                self.producer.poll(0.05)  # the local queue is full (broker down): wait
            except Exception as exc:
                with self.lock:
                    self.refused[ident] = str(exc)
                return
        self.producer.poll(0)

    def flush(self, timeout_s: float) -> int:
        """Wait for outstanding deliveries; the number still unacknowledged."""
        return int(self.producer.flush(timeout_s))

    def poll(self) -> None:
        self.producer.poll(0)


def assign_answers(consumer: Consumer, settings: Settings, *, from_beginning: bool = False) -> None:
    """Assign ``consumer`` every partition of ``answers``, from its end (or its start), without a group."""
    topic = settings.topic("answers")
    metadata = consumer.list_topics(topic, timeout=10)
    if topic not in metadata.topics or metadata.topics[topic].error is not None:
        raise BrokerError(f"topic {topic} not found at {settings.kafka.bootstrap_servers}")
    assignment = []
    for partition in metadata.topics[topic].partitions:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10, cached=False)
        assignment.append(TopicPartition(topic, partition, low if from_beginning else high))
    consumer.assign(assignment)


class AnswerReader:
    """Reads ``answers`` (read_committed, no consumer group) from where it was at start."""

    def __init__(self, settings: Settings, *, from_beginning: bool = False) -> None:
        self.settings = settings
        self.arrivals: list[Arrival] = []
        self.undecodable = 0
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        client_id = f"{settings.kafka.prefix}chaos-reader-{uuid.uuid4().hex[:6]}"
        self.consumer = Consumer(load_consumer_config(settings, f"{client_id}-unused", client_id))
        assign_answers(self.consumer, settings, from_beginning=from_beginning)
        self.thread = threading.Thread(target=self._read, name="chaos-answers", daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while not self.stopped.is_set():
            for message in self.consumer.consume(num_messages=500, timeout=0.2):
                if message.error() is not None:
                    continue
                try:
                    answer = Answer.decode(message.value())
                except DecodeError:
                    with self.lock:
                        self.undecodable += 1
                    continue
                code = answer.error.code if answer.error is not None else None
                with self.lock:
                    self.arrivals.append(Arrival(answer.id, answer.status, code, time.time()))

    def snapshot(self) -> list[Arrival]:
        with self.lock:
            return list(self.arrivals)

    def wait_for(self, done: Callable[[list[Arrival]], bool], timeout_s: float) -> bool:
        """Wait until ``done(arrivals)`` holds or ``timeout_s`` passes."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if done(self.snapshot()):
                return True
            time.sleep(0.25)
        return done(self.snapshot())

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(5)
        self.consumer.close()


@dataclass(frozen=True, slots=True)
class RawRecord:
    """A record as read back from a topic."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: HeaderList
    timestamp_ms: int


def read_all(settings: Settings, topic: str, *, idle_s: float = 2.0, timeout_s: float = 60.0) -> list[RawRecord]:
    """Every committed record of declared ``topic`` up to its end when called."""
    name = settings.topic(topic)
    client_id = f"{settings.kafka.prefix}chaos-dump-{uuid.uuid4().hex[:6]}"
    consumer = Consumer(load_consumer_config(settings, f"{client_id}-unused", client_id))
    records: list[RawRecord] = []
    try:
        metadata = consumer.list_topics(name, timeout=10)
        if name not in metadata.topics or metadata.topics[name].error is not None:
            raise BrokerError(f"topic {name} not found at {settings.kafka.bootstrap_servers}")
        ends: dict[int, int] = {}
        starts = []
        for partition in metadata.topics[name].partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(name, partition), timeout=10, cached=False)
            if high > low:
                ends[partition] = high
                starts.append(TopicPartition(name, partition, low))
        consumer.assign(starts)
        deadline = time.monotonic() + timeout_s
        quiet_since = time.monotonic()
        while ends and time.monotonic() < deadline:
            batch = consumer.consume(num_messages=500, timeout=0.2)
            for message in batch:
                if message.error() is not None:
                    continue
                ts = message.timestamp()[1]
                records.append(
                    RawRecord(
                        message.partition() or 0,
                        message.offset() or 0,
                        message.key(),
                        message.value(),
                        header_list(message.headers()),
                        int(ts),
                    )
                )
            if batch:
                quiet_since = time.monotonic()
            # Transaction markers advance the position without a record.
            for tp in consumer.position([TopicPartition(name, p) for p in list(ends)]):
                if tp.offset >= ends[tp.partition]:
                    ends.pop(tp.partition)
            if time.monotonic() - quiet_since > max(idle_s, 10.0) and not batch:
                break
    finally:
        consumer.close()
    return records
