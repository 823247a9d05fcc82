"""The one policy for records a stage cannot use, and the one clock of deadlines."""

from __future__ import annotations

import pytest

from pipeline.errors import InvalidRequestError
from pipeline.messages import Answer, fix_deadline, left_ms, passed
from pipeline.records import Output, Record
from pipeline.stages.base import BadRecords


def record(value: bytes, key: bytes = b"r1") -> Record:
    return Record(topic="t", partition=0, offset=7, key=key, value=value, headers=[], timestamp_ms=1)


def refuse_bad(record: Record) -> list[Output]:
    if record.value == b"bad":
        raise InvalidRequestError("bad record", request_id="r1")
    return [Output("next", record.key, record.value)]


def test_before_split_a_bad_request_is_answered_and_dead_lettered_and_the_batch_goes_on() -> None:
    out = BadRecords("filter", answers=True).each([record(b"bad"), record(b"good")], refuse_bad)
    assert [o.topic for o in out] == ["answers", "dead-letters", "next"]
    answer = Answer.decode(out[0].value)
    assert (answer.id, answer.ok, answer.error and answer.error.code) == ("r1", False, "invalid_request")
    assert ("pipeline-dlq-stage", b"filter") in out[1].headers


def test_after_split_a_bad_record_is_only_dead_lettered() -> None:
    out = BadRecords("infer", answers=False).each([record(b"bad")], refuse_bad)
    assert [o.topic for o in out] == ["dead-letters"]  # merge answers the request at its deadline, once


def test_an_error_that_is_not_the_records_fault_ends_the_batch() -> None:
    def broken(record: Record) -> list[Output]:
        raise RuntimeError("the model failed")

    with pytest.raises(RuntimeError):
        BadRecords("split", answers=True).each([record(b"x")], broken)


def test_a_deadline_is_read_with_one_clock() -> None:
    assert fix_deadline(None, None, produced_ms=1_000.0, default_timeout_ms=30_000) == 31_000
    assert fix_deadline(None, 5_000, 1_000.0, 30_000) == 5_000
    assert fix_deadline(9_000, 5_000, 1_000.0, 30_000) == 9_000  # the request's own comes first
    assert left_ms(None) is None and not passed(None)
    assert left_ms(10_000, now=4_000.0) == 6_000
    assert passed(10_000, now=10_000.0) and not passed(10_000, now=9_999.0)
