"""What redrive replays, what it skips, and how a replay's deadline is renewed."""

from __future__ import annotations

import orjson

from pipeline.commands.redrive import parse_time
from pipeline.errors import DeadlineExceededError
from pipeline.messages import DEADLINE_HEADER, Headers
from pipeline.operations.redrive import REDRIVE_HEADER, DeadLetter, replay_record, select
from pipeline.records import Record
from pipeline.stages.base import reject
from pipeline.tools.bench.loadgen import RawRecord


def letter(source: str, code: str, stage: str, ts: int, value: bytes = b"{}") -> DeadLetter:
    record = Record(source, 3, 41, b"id-1", value, [("tenant", b"t1"), (DEADLINE_HEADER, b"1000")], 5.0)
    dead = reject(record, DeadlineExceededError("late").at(record.where), stage)[-1]
    return DeadLetter.parse(RawRecord(0, 7, dead.key, dead.value, dead.headers, ts))


def test_a_dead_letter_is_parsed_back_to_its_original_record_and_reason() -> None:
    d = letter("requests", "deadline_exceeded", "filter", 100, b'{"id":"id-1"}')
    assert (d.stage, d.code, d.source, d.source_topic) == ("filter", "deadline_exceeded", "requests[3]@41", "requests")
    assert d.headers == [("tenant", b"t1"), (DEADLINE_HEADER, b"1000")]
    assert d.value == b'{"id":"id-1"}' and d.replayable


def test_parts_and_results_are_skipped_with_a_reason() -> None:
    for source in ("parts", "results"):
        d = letter(source, "invalid_request", "infer", 0)
        assert not d.replayable and d.skip_reason is not None and source in d.skip_reason


def test_select_filters_by_stage_code_and_time() -> None:
    letters = [letter("requests", "x", "filter", 100), letter("filtered", "x", "split", 200)]
    assert [d.stage for d in select(letters, stages=["split"])] == ["split"]
    assert len(select(letters, codes=["deadline_exceeded"])) == 2  # reject() took the error's code
    assert [d.timestamp_ms for d in select(letters, since_ms=150)] == [200]
    assert [d.timestamp_ms for d in select(letters, until_ms=150)] == [100]


def test_a_replay_gets_a_fresh_deadline_and_names_its_dead_letter() -> None:
    d = letter("requests", "deadline_exceeded", "filter", 0, b'{"id":"id-1","deadline_ms":1000,"text":"hi"}')
    key, value, headers = replay_record(d, now_ms=50_000, timeout_ms=30_000)
    assert key == b"id-1"
    assert orjson.loads(value) == {"id": "id-1", "deadline_ms": 80_000, "text": "hi"}
    parsed = Headers.parse(headers)
    assert parsed.deadline_ms == 80_000 and parsed.hops == {}
    assert (REDRIVE_HEADER, b"dead-letters[0]@7") in headers and ("tenant", b"t1") in headers
    # Bytes that are not JSON go back unchanged.
    assert replay_record(letter("requests", "x", "filter", 0, b"\xff"), 0, 1)[1] == b"\xff"


def test_times_are_iso_or_ages() -> None:
    assert parse_time("30m", now=10_000.0) == (10_000 - 1800) * 1000
    assert parse_time(None, now=0.0) is None
    assert parse_time("2026-01-01T00:00:00+00:00", now=0.0) == 1_767_225_600_000
