"""A transactional call that keeps failing with retriable errors is given up after its limit: the member ends
(and is restarted) after ~10 s instead of hanging for the watchdog's whole transaction budget."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException

from pipeline.runtime import delivery
from pipeline.runtime.delivery import Delivery, TransactionStuckError


def _delivery() -> Delivery:
    d = Delivery.__new__(Delivery)  # only what _retrying uses
    d.stage = "merge"
    d.warn_once = lambda *_: None
    return d


def _transport(*_: object) -> None:
    raise KafkaException(KafkaError(KafkaError._TRANSPORT, "Broker transport failure", retriable=True))


def test_a_call_failing_past_its_limit_is_given_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(delivery.time, "sleep", lambda _: None)
    with pytest.raises(TransactionStuckError, match="send offsets still failing"):
        _delivery()._retrying("send offsets", _transport, give_up_s=0.05)


def test_without_a_limit_a_call_is_retried_until_it_succeeds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(delivery.time, "sleep", lambda _: None)
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 5:
            _transport()
        return "done"

    assert _delivery()._retrying("commit", flaky) == "done"
    assert len(calls) == 5
