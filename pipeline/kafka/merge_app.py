"""The merge stage on faust: a changelog-backed table of gathers, one agent, one timer.

The logic is :func:`pipeline.stages.merge.step`; this module only wires it to
faust-streaming:

* the ``gather`` table (request id → :class:`~pipeline.stages.merge.Gather`
  as JSON bytes) is co-partitioned with ``results`` and backed by a compacted
  changelog topic, so a merge member killed at any point comes back (or its
  partitions move to another member) with every pending part intact;
* with ``processing_guarantee=exactly_once`` faust writes answers, changelog
  updates and consumed offsets in one Kafka transaction per partition, so a
  crash can neither lose nor duplicate an answer;
* the timer looks for requests past their deadline (and old tombstones) and
  sends a tick record to that request's own ``results`` partition. Faust only
  lets a table change inside stream processing, and routing the tick through
  Kafka keeps the table and its changelog consistent.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

import faust
from confluent_kafka import Producer
from faust.transport.drivers import aiokafka as faust_aiokafka

from pipeline.kafka.config import producer_config
from pipeline.messages import header_list, now_ms
from pipeline.settings import Settings
from pipeline.stages.base import Output, Record, reject
from pipeline.stages.merge import STAGE, Gather, due_tick, step
from pipeline.stages.split import CONTROL_HEADER
from pipeline.topics import load_topics

log = logging.getLogger("pipeline.merge")

# A tick already sent is not sent again for this long (it is on its way).
TICK_RESEND_S = 2.0
# faust hard-codes a 1.5 s fetch wait. Reading committed results, a fetch can
# sit out that wait even though a transaction just made records visible, so
# every answer would wait for it; see pipeline.kafka.config's fetch.wait.max.ms.
FETCH_MAX_WAIT_MS = 10


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


class MergeApp(faust.App):
    """faust's App with the low-latency consumer above."""

    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self)


def build_merge_app(settings: Settings) -> faust.App:
    """The faust app of one merge member, built from settings (nothing at import)."""
    topics = load_topics(settings)
    partitions = topics["results"].partitions
    app = MergeApp(
        settings.group(STAGE),
        broker=[f"kafka://{server}" for server in settings.bootstrap_servers.split(",")],
        # Pending gathers are small and few; the changelog restores them.
        store="memory://",
        processing_guarantee=settings.processing_guarantee,
        topic_replication_factor=settings.internal_replication_factor,
        topic_partitions=partitions,
        table_standby_replicas=0,
        broker_commit_interval=settings.merge_commit_interval_ms / 1000.0,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=10.0,
        broker_heartbeat_interval=2.0,
        web_enabled=False,
        # Values are our own JSON bytes (orjson), for the table as for topics.
        key_serializer="raw",
        value_serializer="raw",
    )
    raw: dict[str, Any] = {"key_serializer": "raw", "value_serializer": "raw"}
    results = app.topic(settings.topic("results"), partitions=partitions, **raw)
    sinks = {name: app.topic(settings.topic(name), **raw) for name in ("answers", "dead-letters")}

    table = app.Table("gather", partitions=partitions, key_type=bytes, value_type=bytes)
    ticker = Producer(producer_config(settings, f"{settings.group(STAGE)}-ticker"))
    ticked: dict[bytes, float] = {}

    async def commit_step(record: Record, state: bytes | None, changed: bool, outputs: list[Output]) -> None:
        """Apply one step: the table change and the outputs, atomically.

        faust (0.15) commits each partition's transaction from a timer, while
        the agent may be between two sends, and it routes a send to the
        transaction of the *destination* partition (none at all for answers,
        which this app does not consume). A crash could then keep an answer
        whose table update was lost, or the reverse: a second answer, or none.
        So under exactly_once both go straight into the transaction of the
        record's own partition while holding that transaction's lock, which
        faust's commit takes too: the answer, the changelog record and (with
        the offset, in this or a later commit) the input commit together or not
        at all. The in-memory table is then updated without a second changelog
        write; recovery replays the same changelog records.
        """
        key = record.key
        assert key is not None
        if not app.in_transaction:
            if changed:
                if state is None:
                    table.pop(key, None)
                else:
                    table[key] = state
            for output in outputs:
                await sinks[output.topic].send(key=output.key, value=output.value, headers=output.headers)
            return
        producer: Any = app.producer  # faust.transport.drivers.aiokafka.Producer
        transactional_id = f"{app.conf.id}-{app.assignor.group_for_topic(results.get_topic_name())}-{record.partition}"
        async with producer._trn_locks[transactional_id]:
            transaction = producer._transaction_producers.get(transactional_id)
            if transaction is None:  # the partition moved away mid-event: its new owner redoes it
                log.info("dropping the outputs of %s: partition revoked", record.where)
                return
            if changed:
                changelog = table.changelog_topic.get_topic_name()
                await transaction.send(changelog, state, key=key, partition=record.partition)
            for output in outputs:
                await transaction.send(
                    settings.topic(output.topic), output.value, key=output.key, headers=output.headers
                )
        if changed:
            if state is None:
                table.data.pop(key, None)
            else:
                table.data[key] = state

    @app.agent(results, name="merge")
    async def merge(stream: faust.StreamT) -> None:
        async for event in stream.events():
            message = event.message
            record = Record(
                "results",
                message.partition,
                message.offset,
                message.key,
                message.value,
                header_list(message.headers),
                message.timestamp * 1000.0,
            )
            if not record.key:
                dead = reject(record, _no_key(record), STAGE)[-1:]
                await commit_step(replace(record, key=b""), None, False, dead)
                continue
            before = table.get(record.key)
            outcome = step(Gather.decode(before) if before else None, record, settings, now_ms())
            after = None if outcome.state is None else outcome.state.encode()
            if outcome.state is None:
                ticked.pop(record.key, None)
            await commit_step(record, after, after != before, outcome.outputs)

    @app.timer(interval=settings.merge_tick_ms / 1000.0)
    async def tick() -> None:
        now, wall = now_ms(), time.monotonic()
        for key, value in list(table.items()):
            gather = Gather.decode(value)
            kind = due_tick(gather, settings, now)
            if kind is None or wall - ticked.get(key, -TICK_RESEND_S) < TICK_RESEND_S:
                continue
            ticked[key] = wall
            kwargs: dict[str, Any] = {} if gather.partition is None else {"partition": gather.partition}
            ticker.produce(settings.topic("results"), key=key, value=b"{}", headers=[(CONTROL_HEADER, kind)], **kwargs)
        ticker.poll(0)

    return app


def _no_key(record: Record) -> Any:
    from pipeline.errors import DecodeError

    return DecodeError("result without a key: cannot tell which request it belongs to").at(record.where)


def run_merge(settings: Settings) -> None:
    """Run one merge member until stopped (SIGINT/SIGTERM)."""
    app = build_merge_app(settings)
    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True, redirect_stdouts=False)
    log.info("merge member starting: group %s, %s", settings.group(STAGE), settings.processing_guarantee)
    worker.execute_from_commandline()
