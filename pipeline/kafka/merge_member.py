"""The merge stage on the shared stage runner, with its state in a changelog-backed table.

The logic is :func:`pipeline.stages.merge.step`. This module keeps, for each
``results`` partition this member owns, a table of request id → gather (as
bytes), backed by the compacted ``merge-state`` topic, partition for
partition:

* **One transaction per batch.** Every change to the table is written to
  ``merge-state`` in the same Kafka transaction as the answers it caused and
  the consumed offsets. After a crash at any point, the table restored from
  the changelog is exactly the one that goes with the committed offsets: no
  answer is lost and none is sent twice.
* **Restore on assignment.** When a partition becomes ours, its changelog
  partition is read (``read_committed``) to the end before any of its records
  is processed; a revoked partition's table is dropped.
* **Deadlines as ticks.** The loop looks for gathers past their deadline (and
  old tombstones) and sends a tick record to that request's own ``results``
  partition, so the decision to answer late is made, and committed, like any
  other step.

faust-streaming was the first home of this table. Its ``exactly_once`` mode
did not hold under SIGKILL (docs/architecture.md has the evidence), so the
table lives here, on the same transactional runner as the other stages.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from pipeline.errors import BrokerError, DecodeError
from pipeline.kafka.config import consumer_config, producer_config
from pipeline.kafka.runner import StageHooks
from pipeline.messages import now_ms
from pipeline.settings import Settings
from pipeline.stages.base import Output, Record, reject
from pipeline.stages.merge import STAGE, Gather, due_tick, step
from pipeline.stages.split import CONTROL_HEADER

log = logging.getLogger("pipeline.merge")

STATE_TOPIC = "merge-state"
# A tick already sent is not sent again for this long (it is on its way).
TICK_RESEND_S = 2.0
# How long restoring may wait for a dead member's open transaction to end.
RESTORE_TIMEOUT_S = 120.0

Table = dict[bytes, bytes]


@dataclass
class Merger(StageHooks):
    """One merge member's handler and hooks: tables by partition, restore, ticks."""

    settings: Settings
    tables: dict[int, Table] = field(default_factory=dict)
    ticked: dict[bytes, float] = field(default_factory=dict)
    last_tick: float = 0.0
    ticker: Producer | None = None

    # -- the handler: runs in the runner's worker thread ---------------------------

    def __call__(self, records: Sequence[Record]) -> list[Output]:
        outputs: list[Output] = []
        now = now_ms()
        for record in records:
            if not record.key:
                error = DecodeError("result without a key: cannot tell which request it belongs to")
                outputs.extend(reject(record, error.at(record.where), STAGE)[-1:])
                continue
            table = self.tables.setdefault(record.partition, {})
            before = table.get(record.key)
            outcome = step(Gather.decode(before) if before else None, record, self.settings, now)
            after = None if outcome.state is None else outcome.state.encode()
            if after != before:
                if after is None:
                    table.pop(record.key, None)
                    self.ticked.pop(record.key, None)
                else:
                    table[record.key] = after
                outputs.append(Output(STATE_TOPIC, record.key, after, partition=record.partition))
            outputs.extend(outcome.outputs)
        return outputs

    # -- hooks: run on the loop's thread -----------------------------------------------

    def assigned(self, partitions: list[int]) -> None:
        began = time.monotonic()
        restored = restore(self.settings, partitions)
        self.tables.update(restored)
        pending = sum(len(t) for t in restored.values())
        log.info("restored %d gathers of partitions %s in %.2f s", pending, partitions, time.monotonic() - began)

    def revoked(self, partitions: list[int]) -> None:
        for partition in partitions:
            self.tables.pop(partition, None)

    def tick(self) -> None:
        wall = time.monotonic()
        if wall - self.last_tick < self.settings.merge_tick_ms / 1000.0:
            return
        self.last_tick = wall
        if self.ticker is None:
            self.ticker = Producer(producer_config(self.settings, f"{self.settings.group(STAGE)}-ticker"))
        now = now_ms()
        for partition, table in list(self.tables.items()):
            for key, value in list(table.items()):
                kind = due_tick(Gather.decode(value), self.settings, now)
                if kind is None or wall - self.ticked.get(key, -TICK_RESEND_S) < TICK_RESEND_S:
                    continue
                self.ticked[key] = wall
                self.ticker.produce(
                    self.settings.topic("results"),
                    key=key,
                    value=b"{}",
                    partition=partition,
                    headers=[(CONTROL_HEADER, kind)],
                )
        self.ticker.poll(0)


def restore(settings: Settings, partitions: list[int]) -> dict[int, Table]:
    """Read the changelog partitions to their end: the tables as last committed."""
    tables: dict[int, Table] = {p: {} for p in partitions}
    if not partitions:
        return tables
    topic = settings.topic(STATE_TOPIC)
    config = consumer_config(settings, f"{settings.group(STAGE)}-restore", f"{settings.group(STAGE)}-restore")
    consumer = Consumer(config)
    try:
        ends: dict[int, int] = {}
        for partition in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10, cached=False)
            if high > low:
                ends[partition] = high
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        deadline = time.monotonic() + RESTORE_TIMEOUT_S
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
            positions = consumer.position([TopicPartition(topic, p) for p in ends])
            for tp in positions:
                if tp.offset >= ends[tp.partition]:
                    ends.pop(tp.partition)
    finally:
        consumer.close()
    return tables
