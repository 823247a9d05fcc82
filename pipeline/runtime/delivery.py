"""How a member's outputs reach Kafka: its transactional (or plain) producer, kept working through outages.

* **exactly_once:** a batch's outputs and its consumed offsets go in one
  transaction. Retriable failures of a transactional call are retried
  (librdkafka's advice); the watchdog's budget for the transaction bounds
  the retries, because librdkafka can block past its own timeout when the
  coordinator it cached went away (librdkafka #5456, #5511). Send offsets
  is the exception: nothing is committed yet, so a failed one renews the
  producer and the batch is redone, instead of blocking on that coordinator.
* **After an outage** (a lost group session, all brokers down) the producer
  is made anew with the same transactional id before the next transaction:
  ``init_transactions`` fences the old one and the new one finds the
  coordinators afresh. The old one is kept, not destroyed, since librdkafka's
  destroy can block on the same stale coordinator.
* **at_least_once:** outputs are flushed and acknowledged, then offsets committed.
* **The side producer** sends at once outside any transaction (merge's ticks,
  generate's streamed chunks); it is idempotent, and safe from any thread.
* **A write an ACL refuses** (a delivery report, or a transactional call,
  with an authorization error) ends the member with an
  :class:`~pipeline.errors.AuthorizationError` naming its user and the topic:
  an aborted batch would be redone and refused again, forever, while the
  member looked alive.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from pipeline.errors import AuthorizationError, BrokerError
from pipeline.messages import kafka_headers
from pipeline.records import Output
from pipeline.runtime.auth import DENIED, denied, watch_refused_topics
from pipeline.runtime.clients import Clients
from pipeline.runtime.liveness import Watchdog
from pipeline.settings import Settings

log = logging.getLogger("pipeline.delivery")

# librdkafka's own timeout for each transactional call; the watchdog bounds retries of them.
TXN_CALL_TIMEOUT_S = 10.0
# How long committing one batch may take, retries included, before the member
# gives up and restarts. 20 s, as before issue 20's cluster work: a 45 s budget
# (to ride out a transaction coordinator's failover on three brokers) and giving
# up send offsets after 10 or 25 s were tried, and on one broker a 5 s restart
# then left members stuck up to 35 s inside one librdkafka call, or ended them
# mid-transaction: 7 to 192 of ~360 requests missed their deadline where 20 s
# answered all (docs/reliability.md, "Three brokers").
TXN_BUDGET_S = 2 * TXN_CALL_TIMEOUT_S

# How long past its own timeout a send offsets call may block before the batch is redone without it.
SEND_OFFSETS_GRACE_S = 2.0


def bounded(call: Callable[..., Any], *args: Any, wait_s: float) -> BaseException | bool | None:
    """Run ``call(*args)`` in a thread: True when it returned, what it raised, or None if still blocked after
    ``wait_s`` (the thread is left to it; confluent-kafka releases the GIL while librdkafka blocks)."""
    outcome: list[BaseException | bool] = []
    done = threading.Event()

    def run() -> None:
        try:
            call(*args)
            outcome.append(True)
        except BaseException as exc:  # handed to the caller, which raises what it does not handle
            outcome.append(exc)
        finally:
            done.set()

    threading.Thread(target=run, name="bounded-call", daemon=True).start()
    return outcome[0] if done.wait(wait_s) and outcome else None


Warn = Callable[..., None]


class Delivery:
    """One member's producers: the one that commits batches, and the side one that sends at once."""

    def __init__(self, settings: Settings, stage: str, clients: Clients, watchdog: Watchdog, warn_once: Warn) -> None:
        self.settings = settings
        self.stage = stage
        self.transactional = settings.runtime.processing_guarantee.transactional  # the one reader of the guarantee
        self.watchdog = watchdog
        self.warn_once = warn_once
        self._make_producer = clients.producer
        self._make_side = clients.side
        self.producer = clients.producer()
        self.retired: list[Any] = []  # producers replaced after an outage (never destroyed, see above)
        self.renew = False  # the brokers were out of reach: make the producer anew before the next transaction
        self.side: Any = None
        self.side_lock = threading.Lock()
        self.errors: list[KafkaError] = []
        self.refusal: AuthorizationError | None = None  # the first write an ACL refused: the member ends
        self.refused_topics = watch_refused_topics()  # which topic a refused transaction named in the log

    def outage(self) -> None:
        """The brokers were out of reach, or the group session ended: a transactional producer is made anew."""
        self.renew = self.transactional

    def start(self) -> None:
        """Before the member joins: the side producer connected, older instances of this member fenced."""
        # The side producer is made now, not at the first send: its connection is up
        # before the first streamed chunk, which must not arrive after its answer.
        with self.side_lock:
            self.side = self.side or self._make_side()
        if self.transactional:
            self._retrying("init transactions", self.producer.init_transactions, TXN_CALL_TIMEOUT_S)

    def commit(self, outputs: Sequence[Output], offsets: list[TopicPartition], consumer: Any) -> bool:
        """Outputs and offsets committed together; False if the transaction was aborted (redo the batch)."""
        if not self.transactional:
            self._commit_plain(outputs, offsets, consumer)
            return True
        self.watchdog.beat("transaction", TXN_BUDGET_S)
        if self.renew:
            self._renew()
        self.check()
        try:
            self.producer.begin_transaction()
            self.produce(outputs)
            metadata = consumer.consumer_group_metadata()
            if not self._send_offsets(offsets, metadata):
                return False
            self._retrying("commit", self.producer.commit_transaction, TXN_CALL_TIMEOUT_S)
        except KafkaException as exc:
            error = exc.args[0]
            self.producer.poll(0)  # the delivery reports: a refused write names its topic there
            self.check(error, "commit its transaction")
            if error.fatal() or not error.txn_requires_abort():
                raise BrokerError(f"{self.stage}: transaction failed, batch will be redone: {error}") from exc
            # Typically the group moved on (a rebalance) before the offsets were
            # committed: nothing of the batch becomes visible, and it is redone,
            # here or by the partitions' new owner.
            self._retrying("abort", self.producer.abort_transaction, TXN_CALL_TIMEOUT_S)
            log.warning("%s: transaction aborted: %s", self.stage, error)
            return False
        return True

    def _send_offsets(self, offsets: list[TopicPartition], metadata: Any) -> bool:
        """The batch's offsets into the transaction; False if that failed or hung (the batch is redone).

        Not retried on this producer, and not waited for past its timeout:
        after a broker restart a retry, and with a broker paused the first
        call, blocked past its own timeout on the coordinator the producer had
        cached (librdkafka #5456, #5511) until the watchdog ended the member
        (infer: 20 s, then a model reload). Nothing is committed yet, so the
        producer is made anew before the next transaction, as after an outage:
        its ``init_transactions`` aborts this one, and the batch is redone. A
        call still blocked is left to its thread with the retired producer.
        """
        call = self.producer.send_offsets_to_transaction
        outcome = bounded(call, offsets, metadata, TXN_CALL_TIMEOUT_S, wait_s=TXN_CALL_TIMEOUT_S + SEND_OFFSETS_GRACE_S)
        if outcome is None:
            reason = f"blocked past its {TXN_CALL_TIMEOUT_S:.0f} s timeout"
        elif isinstance(outcome, KafkaException):
            error = outcome.args[0]
            self.check(error, "send offsets")
            if error.fatal() or error.txn_requires_abort() or not error.retriable():
                raise outcome
            reason = str(error)
        elif isinstance(outcome, BaseException):
            raise outcome
        else:
            return True
        log.warning("%s: send offsets failed (%s); renewing the producer and redoing the batch", self.stage, reason)
        self.renew = True
        return False

    def _commit_plain(self, outputs: Sequence[Output], offsets: list[TopicPartition], consumer: Any) -> None:
        self.errors.clear()
        self.produce(outputs)
        remaining = self.producer.flush(30)
        self.check()
        if remaining or self.errors:
            raise BrokerError(
                f"{self.stage}: {remaining} outputs unsent, errors: {self.errors[:3]}; offsets not committed"
            )
        consumer.commit(offsets=offsets, asynchronous=False)

    def _renew(self) -> None:
        log.info("%s: renewing the transactional producer after the brokers were out of reach", self.stage)
        self.retired.append(self.producer)
        self.producer = self._make_producer()
        self._retrying("init transactions", self.producer.init_transactions, TXN_CALL_TIMEOUT_S)
        self.renew = False

    def _retrying(self, what: str, call: Callable[..., Any], *args: Any) -> Any:
        """A transactional call, again while it fails with a retriable error; the watchdog bounds the whole."""
        while True:
            try:
                return call(*args)
            except KafkaException as exc:
                error = exc.args[0]
                self.check(error, what)
                if error.fatal() or error.txn_requires_abort() or not error.retriable():
                    raise
                self.warn_once(f"txn:{what}", "%s: %s failed, retrying: %s", self.stage, what, error)
                time.sleep(0.1)

    def produce(self, outputs: Sequence[Output], producer: Any = None) -> None:
        producer = producer or self.producer
        for output in outputs:
            while True:
                try:
                    producer.produce(
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
                    producer.poll(0.05)  # local queue full: let deliveries drain
                except KafkaException as exc:  # refused at once when the topic's metadata already said so
                    self.check(exc.args[0], f"write {self.settings.topic(output.topic)}")
                    raise
        producer.poll(0)

    def send(self, output: Output) -> None:
        """Produce at once outside any transaction; safe from the handler's thread."""
        with self.side_lock:
            if self.side is None:
                self.side = self._make_side()
            self.produce([output], self.side)

    def poll(self) -> None:
        """Serve the side producer's delivery reports (and its log lines); end the member if a write was refused."""
        if self.side is not None:
            self.side.poll(0)
        self.check()

    def check(self, error: KafkaError | None = None, what: str = "") -> None:
        """Raise the :class:`AuthorizationError` of a refused write, or of ``error`` if an ACL refused ``what``."""
        if self.refusal is None and error is not None and error.code() in DENIED:
            self.producer.poll(0)  # the log lines and delivery reports that say which topic
            topics = self.refused_topics.take()
            if error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED and topics:
                what = f"write {', '.join(topics)}"
            self.refusal = self.refusal or denied(self.settings, self.stage, what, error)
        if self.refusal is not None:
            raise self.refusal

    def close(self) -> None:
        self.producer.flush(1)
        if self.side is not None:
            self.side.flush(1)

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self.errors.append(error)
            if error.code() in DENIED and self.refusal is None:
                self.refusal = denied(self.settings, self.stage, f"write {message.topic()}", error)
            log.error("%s: delivery to %s[%s] failed: %s", self.stage, message.topic(), message.partition(), error)
