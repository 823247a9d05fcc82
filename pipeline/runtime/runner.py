"""The one consume → process → produce → commit loop every stage runs.

Stages differ only in the :class:`~pipeline.records.StageLogic` they pass in
(a handler, and hooks for a stage with state or timers). The loop guarantees,
for all of them:

* **Nothing lost, nothing doubled.** With ``exactly_once`` a batch's outputs,
  its state changes and its consumed offsets are committed in one Kafka
  transaction (KIP-447: the group's metadata fences zombies). With
  ``at_least_once`` outputs are flushed and acknowledged before offsets are
  committed.
* **State before records.** A stage with a state table gets each newly
  assigned partition's table restored from its changelog, on the loop's own
  thread (not inside the rebalance callback), before any record of it runs.
* **Liveness.** The handler runs in a worker thread while the loop keeps
  polling, so a slow batch never pushes the member past
  ``max.poll.interval.ms``. Every turn beats a watchdog; a member stuck in a
  call that overruns its budget (the broker gone mid-commit) exits and is
  restarted instead of holding its partitions while answering nothing.
* **Back-pressure through Kafka.** At most ``max_in_flight`` records are held;
  past that the consumer pauses its partitions and lag builds in Kafka.
* **Dynamic batching.** Records wait at most ``max_wait_ms`` to be batched
  with others, at most ``max_batch`` to a batch; the next fills while one runs.

Anything that breaks the loop (an error the client cannot retry, a fenced
producer, a handler that raises) ends the process non-zero; its supervisor
restarts it and uncommitted work is redone. The Kafka clients come from
:class:`~pipeline.runtime.clients.Clients`, so tests can hand in fakes (``tests/unit/fake_kafka.py``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent import futures
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from pipeline.errors import BrokerError
from pipeline.messages import now_ms
from pipeline.records import Batching, Output, Record, StageContext, StageLogic, StateTable
from pipeline.runtime import table
from pipeline.runtime.auth import DENIED, denied
from pipeline.runtime.clients import Clients, connect
from pipeline.runtime.consumed import leave_group, next_offsets, partition_names, places, record_of
from pipeline.runtime.delivery import TXN_CALL_TIMEOUT_S, Delivery
from pipeline.runtime.liveness import HealthFile, Watchdog
from pipeline.runtime.metrics import StageMetrics
from pipeline.runtime.policies import BackPressure, BatchReadiness, CommitOrder, Timers
from pipeline.runtime.session import GroupSession
from pipeline.settings import Settings
from pipeline.telemetry import charge

log = logging.getLogger("pipeline.runner")

# Errors that mean the brokers were out of reach: the producer's view of its
# coordinators may be stale after that, so it is made anew. librdkafka hands
# them to the consumer's error_cb (GroupSession.outage), not to poll; one that
# comes as a consumed message counts the same.
OUTAGE_ERRORS = frozenset({KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT})
# A repeated consume error is logged once per this long, not on every poll.
ERROR_LOG_EVERY_S = 10.0


class StageRunner:
    """One member of one stage's consumer group."""

    def __init__(
        self,
        settings: Settings,
        stage: str,
        source: str,
        logic: StageLogic,
        batching: Batching,
        *,
        changelog: str | None = None,
        clients: Clients | None = None,
    ) -> None:
        self.settings = settings
        self.stage = stage
        self.source = source  # declared topic name
        self.handler = logic.handler
        self.hooks = logic.hooks
        self.batching = batching
        self.state = StateTable(changelog) if changelog else None
        self.client_id = settings.client_id(stage)
        self.overlap = settings.runtime.commit_overlap
        clients = clients or connect(settings, stage, self.client_id, changelog)
        self.consumer = clients.consumer
        self.leaving: threading.Event | None = None  # set: retired, hand the partitions over on stop
        self.session = GroupSession(stage, clients.problems)
        self._restore_rows = clients.restore
        self.buffer: deque[Message] = deque()
        # Batches in the handler, oldest first; committed in this order.
        self.running: deque[tuple[list[Message], Future[list[Output]]]] = deque()
        self.executor = ThreadPoolExecutor(max_workers=batching.max_running, thread_name_prefix=f"{stage}-handler")
        self.paused: set[tuple[str, int]] = set()  # partitions paused for back-pressure
        self.pending_assign: list[int] = []
        self.processed = 0
        self.watchdog = Watchdog(f"{stage} member {self.client_id}")
        self.health = HealthFile(Path(settings.liveness.health_file) if settings.liveness.health_file else None)
        self.last_error_log: dict[str, float] = {}
        self.metrics = StageMetrics(stage)
        self.readiness = BatchReadiness(batching, self.overlap)
        self.backpressure = BackPressure(batching.max_in_flight)
        self.timers = Timers()
        self.delivery = Delivery(settings, stage, clients, self.watchdog, self._warn_once)

    # -- the loop ----------------------------------------------------------------

    def run(self, stop: threading.Event, leave: threading.Event | None = None) -> None:
        """Join the group and turn the loop until ``stop`` is set; then commit what runs and leave.

        ``leave`` set too (the member is retired: scaled down): it hands its
        partitions to the others before it closes (:func:`~pipeline.runtime.consumed.leave_group`).
        """
        self.leaving = leave
        budget = self.settings.liveness.stall_timeout_s
        self.watchdog.start()
        self.watchdog.beat("init_transactions", budget + TXN_CALL_TIMEOUT_S)
        self.join()
        try:
            while not stop.is_set():
                self.watchdog.beat("loop", budget)
                self._report("running")
                self.turn()
        finally:
            self._shutdown()

    def join(self) -> None:
        """Hand the stage its senders and state, fence older instances of this member, subscribe."""
        self.delivery.start()
        self.hooks.start(StageContext(self.send, self.state, self.timers.schedule))
        self.consumer.subscribe(
            [self.settings.topic(self.source)],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        log.info("%s member %s consuming %s (%s)", self.stage, self.client_id, self.source,
                 self.settings.runtime.processing_guarantee)  # fmt: skip

    def turn(self) -> None:
        """One turn of the loop (tests step it without the watchdog)."""
        self.session.check(self.consumer, self.settings.topic(self.source))
        self.timers.run(now_ms())
        self._poll()
        self._restore_pending()
        if self.overlap:
            # The next batch goes to the handler first, then the finished one
            # is committed: the model runs while the transaction's round trips
            # do (they are the loop's own wait, not CPU), instead of after them.
            self._start_batch()
        self._finish_batch(wait=False)
        self._start_batch()

    def _shutdown(self) -> None:
        # Bounded even with the broker gone: past the budget the watchdog ends the
        # process, and what was not committed is redone by the partitions' next owner.
        self.watchdog.beat("stopping", self.settings.liveness.shutdown_timeout_s)
        self._report("stopping", force=True)
        try:
            self._finish_batch(wait=True)
            if self.leaving is not None and self.leaving.is_set():
                log.info("%s member %s leaving its group for good", self.stage, self.client_id)
                leave_group(self.consumer)
        finally:
            self.executor.shutdown(wait=True)
            self.consumer.close()
            self.delivery.close()
            self.watchdog.stop()
            log.info("%s member %s stopped after %d records", self.stage, self.client_id, self.processed)

    def _report(self, state: str, *, force: bool = False) -> None:
        self.metrics.flow(len(self.buffer) + sum(len(batch) for batch, _ in self.running), bool(self.paused))
        self.health.write(
            {"stage": self.stage, "member": self.client_id, "state": state, "processed": self.processed,
             "buffered": len(self.buffer), "paused": len(self.paused)},
            force=force,
        )  # fmt: skip

    def _poll(self) -> None:
        limit = self.batching.max_in_flight
        self._backpressure()
        self.delivery.poll()
        # Busy: wait for the running batch (a finished one wakes the loop at
        # once, not after a poll timeout: that would add to every hop's latency),
        # then take what is fetched; records waiting to batch: check back soon;
        # idle: wait for data.
        if self.running:
            futures.wait([f for _, f in self.running], timeout=0.005, return_when=futures.FIRST_COMPLETED)
        timeout = 0.0 if self.running else 0.001 if self.buffer else 0.1
        # consume(n, timeout) waits for all n messages or the timeout, so wait
        # for the first with poll() and then take what is already fetched.
        # While paused, poll() only serves heartbeats and callbacks. Whatever
        # it returns is kept: a dropped message would be skipped by the next
        # offset commit.
        first = self.consumer.poll(timeout)
        if self.session.outage():
            self._outage()
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
            elif error.code() in OUTAGE_ERRORS:
                self._outage()
            elif error.code() in DENIED:  # an ACL said no: retrying will not change that
                raise denied(self.settings, self.stage, f"read {message.topic()}", error)
            elif error.fatal() or not error.retriable():
                raise BrokerError(f"{self.stage}: consume failed: {error}")
            else:
                self._warn_once(f"consume:{error.code()}", "%s: consume error (retrying): %s", self.stage, error)

    def _outage(self) -> None:
        """Every broker was out of reach: the next transaction starts on a producer made anew."""
        self.delivery.outage()
        self._warn_once("outage", "%s: every broker out of reach (retrying); a new producer will commit", self.stage)

    def _restore_pending(self) -> None:
        """Newly assigned partitions: restore their state, then tell the stage; before any of their records runs."""
        if not self.pending_assign:
            return
        partitions, self.pending_assign = self.pending_assign, []
        self._restore(partitions)

    def _restore(self, partitions: list[int]) -> None:
        if self.state is not None:
            self.watchdog.beat("restore", table.RESTORE_TIMEOUT_S + self.settings.liveness.stall_timeout_s)
            for partition, rows in self._restore_rows(partitions).items():
                self.state.load(partition, rows)
        self.hooks.assigned(partitions)

    def _start_batch(self) -> None:
        if not self.buffer or self.pending_assign:
            return
        computing = sum(1 for _, future in self.running if not future.done())
        oldest = self.buffer[0].timestamp()[1] if self.batching.max_wait_ms else None
        size = self.readiness.take(len(self.buffer), oldest, time.time() * 1000, computing, len(self.running))
        if not size:
            return
        batch = [self.buffer.popleft() for _ in range(size)]
        records = [record_of(m, self.source) for m in batch]
        self.running.append((batch, self.executor.submit(self._handle, records)))

    def _handle(self, records: list[Record]) -> list[Output]:
        """The stage's handler on a batch (in the worker thread), timed."""
        began, cpu = time.perf_counter(), time.process_time()
        outputs = self.handler(records)
        now = time.time() * 1000
        waits = [(now - r.timestamp_ms) / 1000 for r in records if r.timestamp_ms and r.timestamp_ms > 0]
        handler_s = time.perf_counter() - began
        self.metrics.batch(len(records), handler_s, waits)
        # What the batch cost (the process's CPU while it ran), read once per batch, shared among its outputs.
        return charge(outputs, self.stage, (time.process_time() - cpu) * 1000, handler_s * 1000)

    def _finish_batch(self, wait: bool) -> None:
        """Commit finished batches (``wait``: all of them, waiting for each, oldest first).

        A finished batch is committed before older ones still running only when
        none of those holds a record of its partitions: a partition's offsets
        only ever move forward over records that are done.
        """
        while self.running:
            ready = self._next_ready(wait)
            if ready is None:
                return
            batch, future = ready
            outputs = future.result()  # a handler that raises is a bug: crash, redo on restart
            self.running.remove(ready)
            owned = {(tp.topic, tp.partition) for tp in self.consumer.assignment()}
            if any((m.topic(), m.partition()) not in owned for m in batch):
                # Partitions moved while the batch ran; their new owner redoes it.
                log.info("%s: dropping a batch of %d records from revoked partitions", self.stage, len(batch))
                continue
            if self._deliver(batch, outputs):
                self.processed += len(batch)

    def _next_ready(self, wait: bool) -> tuple[list[Message], Future[list[Output]]] | None:
        batches = [(frozenset((m.topic(), m.partition()) for m in b), f.done()) for b, f in self.running]
        index = CommitOrder.next_ready(batches, wait)
        return None if index is None else self.running[index]

    def _discard_running(self) -> list[Message]:
        """Wait for the batches still running and drop their outputs; their records, to be redone."""
        dropped: list[Message] = []
        while self.running:
            batch, future = self.running.popleft()
            future.result()
            dropped.extend(batch)
        return dropped

    # -- delivery ------------------------------------------------------------------

    def _deliver(self, batch: Sequence[Message], outputs: Sequence[Output]) -> bool:
        """Commit a batch's outputs with its offsets; False if it was aborted (and will be redone)."""
        began = time.perf_counter()
        if self.delivery.commit(outputs, next_offsets(batch), self.consumer):
            self.metrics.delivered(outputs, time.perf_counter() - began)
            return True
        log.warning("%s: aborted a batch of %d records; redoing it", self.stage, len(batch))
        # Later batches read state this one changed: they are redone too.
        self._rewind([*batch, *self._discard_running()])
        return False

    def send(self, output: Output) -> None:
        """Produce at once outside any transaction (ticks, streamed chunks); safe from the handler's thread."""
        self.delivery.send(output)

    def _rewind(self, batch: Sequence[Message]) -> None:
        """Go back to the start of an aborted batch on the partitions still ours."""
        first = CommitOrder.first_offsets(places(batch))
        owned = {(tp.topic, tp.partition) for tp in self.consumer.assignment()}
        mine = [TopicPartition(t, p, offset) for (t, p), offset in first.items() if (t, p) in owned]
        self._forget(mine)  # buffered records after the batch are fetched again
        for tp in mine:
            self.consumer.seek(tp)
        # A stateful stage changed its state for records that did not commit.
        self._restore([tp.partition for tp in mine])

    def _warn_once(self, what: str, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self.last_error_log.get(what, -ERROR_LOG_EVERY_S) >= ERROR_LOG_EVERY_S:
            self.last_error_log[what] = now
            log.warning(message, *args)

    # -- rebalances ----------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # State is restored by the loop right after this poll returns (not here:
        # a long restore must not run inside librdkafka's callback).
        log.info("%s: assigned %s", self.stage, partition_names(partitions))
        self.session.assigned()
        self.pending_assign.extend(p.partition for p in partitions)
        # librdkafka keeps a partition's pause flag after it is revoked: one
        # paused (back-pressure) when taken away would come back paused and
        # stay so, its records waiting for the next rebalance. So assign here
        # and resume every new partition (none of its records is buffered).
        consumer.incremental_assign(partitions)
        consumer.resume(partitions)
        self.paused -= {(p.topic, p.partition) for p in partitions}

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Finish and commit what is running while we still own its partitions,
        # then forget buffered records of the partitions we lose.
        log.info("%s: revoked %s", self.stage, partition_names(partitions))
        self._finish_batch(wait=True)
        self._drop(partitions)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.warning(
            "%s: lost %s; their uncommitted work is redone by the new owner", self.stage, partition_names(partitions)
        )
        self.delivery.outage()  # the session ended: the brokers were away, or we were
        self.session.lost()
        self._discard_running()
        self._drop(partitions)

    def _drop(self, partitions: list[TopicPartition]) -> None:
        self._forget(partitions)
        self.paused -= {(p.topic, p.partition) for p in partitions}  # resumed if they come back (_on_assign)
        numbers = [p.partition for p in partitions]
        self.pending_assign = [p for p in self.pending_assign if p not in numbers]
        self.hooks.revoked(numbers)
        if self.state is not None:
            self.state.drop(numbers)

    def _forget(self, partitions: list[TopicPartition]) -> None:
        gone = {(p.topic, p.partition) for p in partitions}
        self.buffer = deque(m for m in self.buffer if (m.topic(), m.partition()) not in gone)

    def _backpressure(self) -> None:
        """Pause or resume partitions so at most about ``max_in_flight`` records wait here (:class:`BackPressure`)."""
        if len(self.buffer) < self.batching.max_in_flight and not self.paused:
            return  # the common case, without asking the consumer for its assignment
        held = ((m.topic() or "", m.partition() or 0) for m in self.buffer)
        assigned = len(self.consumer.assignment())
        pause, resume = self.backpressure.decide(held, len(self.buffer), assigned, self.paused)
        if resume:
            self.consumer.resume([TopicPartition(t, p) for t, p in resume])
            self.paused -= resume
        if pause:
            self.consumer.pause([TopicPartition(t, p) for t, p in pause])
            self.paused |= pause
