"""The one consume → process → produce → commit loop every confluent-kafka stage runs.

filter, split and infer differ only in the :data:`~pipeline.stages.base.Handler`
they pass in. The loop guarantees, for all of them:

* **Nothing lost, nothing doubled.** With ``exactly_once`` a batch's outputs
  and its consumed offsets are committed in one Kafka transaction (KIP-447:
  the consumer group's metadata fences zombies). With ``at_least_once``
  outputs are flushed and acknowledged before the offsets are committed.
* **Liveness.** The handler runs in a worker thread while the main thread
  keeps polling, so a slow batch never pushes the member past
  ``max.poll.interval.ms`` and heartbeats and rebalances go on.
* **Back-pressure through Kafka.** At most ``max_in_flight`` records are held;
  past that the consumer pauses its partitions and lag builds in Kafka, not
  in memory.
* **Dynamic batching.** Records wait at most ``max_wait_ms`` to be batched
  with others, and a batch holds at most ``max_batch`` records; the next batch
  fills while the current one runs.

Anything that breaks the loop (broker errors the client cannot retry, a fenced
producer, a handler that raises) is an infrastructure error: the process exits
non-zero and its supervisor restarts it; uncommitted work is redone.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from pipeline.errors import BrokerError
from pipeline.kafka.config import consumer_config, producer_config
from pipeline.messages import header_list, kafka_headers
from pipeline.settings import Settings
from pipeline.stages.base import Handler, Output, Record

log = logging.getLogger("pipeline.runner")


class StageHooks:
    """What a stateful stage needs from the loop beyond its handler (merge does).

    All run on the loop's thread; ``revoked`` only after the running batch is
    committed, so state and committed offsets agree.
    """

    def assigned(self, partitions: list[int]) -> None:
        """Partitions of the source topic now ours: load their state first."""

    def revoked(self, partitions: list[int]) -> None:
        """Partitions no longer ours: forget their state."""

    def tick(self) -> None:
        """Called on every turn of the loop (a few hundred times a second when busy)."""


@dataclass(frozen=True)
class Batching:
    """How a stage groups records for its handler."""

    max_batch: int = 64
    max_wait_ms: float = 0.0
    max_in_flight: int = 256


class StageRunner:
    """One member of one stage's consumer group."""

    def __init__(
        self,
        settings: Settings,
        stage: str,
        source: str,
        handler: Handler,
        batching: Batching,
        hooks: StageHooks | None = None,
    ) -> None:
        self.settings = settings
        self.hooks = hooks or StageHooks()
        self.stage = stage
        self.source = source  # declared topic name
        self.handler = handler
        self.batching = batching
        member = settings.member or f"{socket.gethostname()}-{os.getpid()}"
        self.client_id = f"{settings.group(stage)}-{member}"
        self.transactional = settings.processing_guarantee == "exactly_once"
        self.consumer = Consumer(consumer_config(settings, settings.group(stage), self.client_id))
        self.producer = Producer(
            producer_config(settings, self.client_id, transactional_id=self.client_id if self.transactional else None)
        )
        self.buffer: deque[Message] = deque()
        self.running: tuple[list[Message], Future[list[Output]]] | None = None
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{stage}-handler")
        self.paused = False
        self.delivery_errors: list[KafkaError] = []
        self.processed = 0

    # -- the loop ----------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        if self.transactional:
            self.producer.init_transactions(30)
        self.consumer.subscribe(
            [self.settings.topic(self.source)],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        log.info(
            "%s member %s consuming %s (%s)",
            self.stage,
            self.client_id,
            self.source,
            self.settings.processing_guarantee,
        )
        try:
            while not stop.is_set():
                self.hooks.tick()
                self._poll()
                self._finish_batch(wait=False)
                self._start_batch()
            self._finish_batch(wait=True)
        finally:
            self.executor.shutdown(wait=True)
            self.consumer.close()
            self.producer.flush(10)
            log.info("%s member %s stopped after %d records", self.stage, self.client_id, self.processed)

    def _poll(self) -> None:
        limit = self.batching.max_in_flight
        if self.paused and len(self.buffer) <= limit // 2:
            self._pause(False)
        elif not self.paused and len(self.buffer) >= limit:
            self._pause(True)  # lag builds in Kafka, not in memory
        # Busy: check back soon for the running batch; idle: wait for data.
        timeout = 0.005 if self.running or self.buffer else 0.1
        # consume(n, timeout) waits for all n messages or the timeout, so wait
        # for the first with poll() and then take what is already fetched.
        # While paused, poll() only serves heartbeats and callbacks. Whatever
        # it returns is kept: a dropped message would be skipped by the next
        # offset commit.
        first = self.consumer.poll(timeout)
        if first is None:
            return
        room = max(limit - len(self.buffer), 1)
        more = self.consumer.consume(num_messages=min(room, self.batching.max_batch), timeout=0) if room > 1 else []
        for message in [first, *more]:
            error = message.error()
            if error is None:
                self.buffer.append(message)
            elif error.code() == KafkaError._PARTITION_EOF:
                continue
            elif error.fatal() or not error.retriable():
                raise BrokerError(f"{self.stage}: consume failed: {error}")
            else:
                log.warning("%s: consume error (retrying): %s", self.stage, error)

    def _start_batch(self) -> None:
        if self.running is not None or not self.buffer:
            return
        oldest = self.buffer[0].timestamp()[1] if self.batching.max_wait_ms else None
        waited_ms = time.time() * 1000 - oldest if oldest and oldest > 0 else float("inf")
        if len(self.buffer) < self.batching.max_batch and waited_ms < self.batching.max_wait_ms:
            return
        batch = [self.buffer.popleft() for _ in range(min(self.batching.max_batch, len(self.buffer)))]
        records = [self._record(m) for m in batch]
        self.running = (batch, self.executor.submit(self.handler, records))

    def _finish_batch(self, wait: bool) -> None:
        if self.running is None:
            return
        batch, future = self.running
        if not wait and not future.done():
            return
        outputs = future.result()  # a handler that raises is a bug: crash, redo on restart
        self.running = None
        owned = set(self.consumer.assignment())
        if any(TopicPartition(m.topic() or "", m.partition() or 0) not in owned for m in batch):
            # Partitions moved while the batch ran; their new owner redoes it.
            log.info("%s: dropping a batch of %d records from revoked partitions", self.stage, len(batch))
            return
        if self._deliver(batch, outputs):
            self.processed += len(batch)

    # -- delivery ------------------------------------------------------------------

    def _deliver(self, batch: Sequence[Message], outputs: Sequence[Output]) -> bool:
        """Commit a batch's outputs with its offsets; False if it was aborted (and will be redone)."""
        offsets = _next_offsets(batch)
        if self.transactional:
            try:
                self.producer.begin_transaction()
                self._produce(outputs)
                self.producer.send_offsets_to_transaction(offsets, self.consumer.consumer_group_metadata(), 30)
                self.producer.commit_transaction(30)
            except KafkaException as exc:
                error = exc.args[0]
                if error.fatal() or not error.txn_requires_abort():
                    raise BrokerError(f"{self.stage}: transaction failed, batch will be redone: {error}") from exc
                # Typically the group moved on (a rebalance) before the offsets
                # were committed: nothing of the batch becomes visible, and it
                # is redone, here or by the partitions' new owner.
                self.producer.abort_transaction(30)
                log.warning("%s: aborted a batch of %d records (%s); redoing it", self.stage, len(batch), error)
                self._rewind(batch)
                return False
            return True
        self.delivery_errors.clear()
        self._produce(outputs)
        remaining = self.producer.flush(30)
        if remaining or self.delivery_errors:
            raise BrokerError(
                f"{self.stage}: {remaining} outputs unsent, errors: {self.delivery_errors[:3]}; offsets not committed"
            )
        self.consumer.commit(offsets=offsets, asynchronous=False)
        return True

    def _rewind(self, batch: Sequence[Message]) -> None:
        """Go back to the start of an aborted batch on the partitions still ours."""
        first: dict[tuple[str, int], int] = {}
        for message in batch:
            key = (message.topic() or "", message.partition() or 0)
            first[key] = min(first.get(key, message.offset() or 0), message.offset() or 0)
        owned = {(tp.topic, tp.partition) for tp in self.consumer.assignment()}
        mine = [
            TopicPartition(topic, partition, offset)
            for (topic, partition), offset in first.items()
            if (topic, partition) in owned
        ]
        self._forget(mine)  # buffered records after the batch are fetched again
        for tp in mine:
            self.consumer.seek(tp)
        # A stateful stage changed its state for records that did not commit.
        self.hooks.assigned([tp.partition for tp in mine])

    def _produce(self, outputs: Sequence[Output]) -> None:
        for output in outputs:
            while True:
                try:
                    self.producer.produce(
                        self.settings.topic(output.topic),
                        key=output.key,
                        value=output.value,
                        headers=kafka_headers(output.headers),
                        # -1: librdkafka's "unassigned", the partitioner picks by key.
                        partition=-1 if output.partition is None else output.partition,
                        on_delivery=self._on_delivery,
                    )
                    break
                except BufferError:
                    self.producer.poll(0.05)  # local queue full: let deliveries drain
        self.producer.poll(0)

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self.delivery_errors.append(error)
            log.error("%s: delivery to %s[%s] failed: %s", self.stage, message.topic(), message.partition(), error)

    # -- rebalances ----------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("%s: assigned %s", self.stage, _names(partitions))
        self.hooks.assigned([p.partition for p in partitions])
        if self.paused:
            consumer.pause(partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Finish and commit what is running while we still own its partitions,
        # then forget buffered records of the partitions we lose.
        log.info("%s: revoked %s", self.stage, _names(partitions))
        self._finish_batch(wait=True)
        self._forget(partitions)
        self.hooks.revoked([p.partition for p in partitions])

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.warning("%s: lost %s; their uncommitted work is redone by the new owner", self.stage, _names(partitions))
        self._forget(partitions)
        if self.running is not None:
            self.running[1].result()
            self.running = None
        self.hooks.revoked([p.partition for p in partitions])

    def _forget(self, partitions: list[TopicPartition]) -> None:
        gone = {(p.topic, p.partition) for p in partitions}
        self.buffer = deque(m for m in self.buffer if (m.topic(), m.partition()) not in gone)

    def _pause(self, paused: bool) -> None:
        if paused == self.paused:
            return
        assignment = self.consumer.assignment()
        if paused:
            self.consumer.pause(assignment)
        else:
            self.consumer.resume(assignment)
        self.paused = paused

    def _record(self, message: Message) -> Record:
        return Record(
            topic=self.source,
            partition=message.partition() or 0,
            offset=message.offset() or 0,
            key=message.key(),
            value=message.value(),
            headers=header_list(message.headers()),
            timestamp_ms=float(message.timestamp()[1]),
        )


def _next_offsets(batch: Sequence[Message]) -> list[TopicPartition]:
    highest: dict[tuple[str, int], int] = {}
    for message in batch:
        key = (message.topic() or "", message.partition() or 0)
        highest[key] = max(highest.get(key, -1), message.offset() or 0)
    return [TopicPartition(topic, partition, offset + 1) for (topic, partition), offset in highest.items()]


def _names(partitions: Sequence[TopicPartition]) -> str:
    return ", ".join(f"{p.topic}[{p.partition}]" for p in partitions) or "nothing"
