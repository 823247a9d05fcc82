"""A transactional call that fails with a retriable error is tried again; the watchdog's transaction budget
(delivery.TXN_BUDGET_S) bounds the whole, not a limit of its own. Send offsets is the exception: failed or
blocked past its timeout, the batch is redone by a producer made anew (nothing was committed)."""

from __future__ import annotations

import threading
import time

import pytest
from confluent_kafka import KafkaError, KafkaException

from pipeline.runtime import delivery
from pipeline.runtime.delivery import Delivery


def _delivery() -> Delivery:
    d = Delivery.__new__(Delivery)  # only what _retrying uses
    d.stage = "merge"
    d.warn_once = lambda *_: None
    d.refusal = None  # no write refused: a transport error is retried, not an ACL's refusal
    return d


def _transport(*_: object) -> None:
    raise KafkaException(KafkaError(KafkaError._TRANSPORT, "Broker transport failure", retriable=True))


def test_a_call_failing_with_a_retriable_error_is_retried_until_it_succeeds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(delivery.time, "sleep", lambda _: None)
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 5:
            _transport()
        return "done"

    assert _delivery()._retrying("commit", flaky) == "done"
    assert len(calls) == 5


class _Producer:
    """A transactional producer whose send offsets times out (after a broker restart)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def begin_transaction(self) -> None:
        self.calls.append("begin")

    def produce(self, *_: object, **__: object) -> None:
        self.calls.append("produce")

    def poll(self, *_: object) -> int:
        return 0

    def send_offsets_to_transaction(self, *_: object) -> None:
        self.calls.append("send offsets")
        if self.calls.count("send offsets") > 1:
            return  # a retry would succeed here: the test still wants none
        raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "Failed to add offsets to transaction", retriable=True))

    def commit_transaction(self, *_: object) -> None:
        self.calls.append("commit")


class _Consumer:
    def consumer_group_metadata(self) -> object:
        return object()


def test_send_offsets_failing_renews_the_producer_and_redoes_the_batch() -> None:
    d = _delivery()
    d.transactional = True
    d.renew = False
    d.producer = _Producer()
    d.watchdog = type("W", (), {"beat": lambda *_: None})()
    # Not retried on the same producer (it blocked past its timeout on a stale coordinator), never committed:
    # the batch is redone by a producer made anew, whose init_transactions aborts this transaction.
    assert d.commit([], [], _Consumer()) is False
    assert d.producer.calls == ["begin", "send offsets"]
    assert d.renew is True


class _Hanging(_Producer):
    """A send offsets that blocks past its own timeout (librdkafka #5456: a paused coordinator)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def send_offsets_to_transaction(self, *_: object) -> None:
        self.calls.append("send offsets")
        self.release.wait(30)


def test_a_send_offsets_blocked_past_its_timeout_is_left_and_the_batch_redone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(delivery, "TXN_CALL_TIMEOUT_S", 0.2)
    monkeypatch.setattr(delivery, "SEND_OFFSETS_GRACE_S", 0.1)
    d = _delivery()
    d.transactional = True
    d.renew = False
    d.producer = producer = _Hanging()
    d.watchdog = type("W", (), {"beat": lambda *_: None})()
    began = time.monotonic()
    assert d.commit([], [], _Consumer()) is False  # not waited for until the watchdog ends the member
    assert time.monotonic() - began < 2.0
    assert producer.calls == ["begin", "send offsets"]
    assert d.renew is True
    producer.release.set()
