"""merge's core, called directly: gathers, answers once, answers on time, shrugs off duplicates."""

from __future__ import annotations

import orjson
import pytest

from pipeline.errors import DecodeError
from pipeline.messages import Answer, Control, Headers, Result
from pipeline.records import Record
from pipeline.settings import Settings
from pipeline.stages.merge import Gather, Step, due, step

EXPECT, DEADLINE, EXPIRE = Control.EXPECT, Control.DEADLINE, Control.EXPIRE

SETTINGS = Settings.of(merge_done_retention_ms=1000)
NOW = 1_000_000.0


def faq_output(i: int) -> dict[str, object]:
    return {"question": f"q{i}?", "entry": f"e{i}", "match": f"m{i}", "answer": f"a{i}", "score": 0.9, "matched": True}


def result_record(part: int, of: int, *, offset: int = 0, deadline: float = NOW + 5000, hop: float = NOW) -> Record:
    headers = Headers(deadline_ms=int(deadline)).stamped("infer", hop).to_list()
    value = Result("r1", "faq", part, of, faq_output(part)).encode()
    return Record("results", 4, offset, b"r1", value, headers)


def control(kind: Control, value: bytes = b"{}", deadline: float = NOW + 5000) -> Record:
    headers = [*Headers(deadline_ms=int(deadline)).to_list(), kind.header()]
    return Record("results", 4, 0, b"r1", value, headers)


def run(records: list[Record], now: float = NOW, state: Gather | None = None) -> tuple[Gather | None, list[Answer]]:
    answers: list[Answer] = []
    for record in records:
        outcome: Step = step(state, record, SETTINGS, now)
        state = outcome.state
        answers += [Answer.decode(o.value) for o in outcome.outputs if o.topic == "answers"]
    return state, answers


def test_answers_once_when_all_parts_are_in_in_part_order() -> None:
    expect = control(EXPECT, orjson.dumps({"id": "r1", "task": "faq", "of": 3}))
    state, answers = run([expect, result_record(2, 3), result_record(0, 3), result_record(1, 3)])
    [answer] = answers
    assert answer.ok and answer.result is not None
    assert [a["entry"] for a in answer.result["answers"]] == ["e0", "e1", "e2"]
    assert "merge" in answer.latency_ms
    assert state is not None and state.done_ms == NOW and state.parts == {}


def test_duplicates_and_late_parts_never_answer_twice() -> None:
    state, answers = run([result_record(0, 2), result_record(0, 2, offset=1)])
    assert answers == [] and state is not None and len(state.parts) == 1
    state, answers = run([result_record(1, 2)], state=state)
    assert len(answers) == 1
    state, answers = run([result_record(1, 2), result_record(0, 2), control(DEADLINE)], state=state)
    assert answers == []


def test_deadline_with_some_parts_is_partial_and_names_the_missing() -> None:
    expect = control(EXPECT, orjson.dumps({"id": "r1", "task": "faq", "of": 3}), deadline=NOW + 10)
    state, answers = run([expect, result_record(1, 3, deadline=NOW + 10)])
    assert answers == [] and state is not None
    assert due(state, SETTINGS) == (NOW + 10, DEADLINE)
    _, [answer] = run([control(DEADLINE)], now=NOW + 11, state=state)
    assert answer.error is not None and answer.error.code == "partial" and answer.error.missing == [0, 2]
    assert answer.result is not None and [a["entry"] for a in answer.result["answers"]] == ["e1"]


def test_deadline_with_no_parts_is_deadline_exceeded() -> None:
    expect = control(EXPECT, orjson.dumps({"id": "r1", "task": "faq", "of": 2}), deadline=NOW - 1)
    _, [answer] = run([expect])
    assert answer.error is not None and answer.error.code == "deadline_exceeded"


def test_a_failed_part_answers_model_error() -> None:
    value = Result("r1", "faq", 0, 2, {"error": {"code": "model_error", "message": "NaN in output"}}).encode()
    _, [answer] = run([Record("results", 0, 0, b"r1", value, [])])
    assert answer.error is not None and answer.error.code == "model_error" and "NaN" in answer.error.message


def test_bad_result_bytes_are_dead_lettered_without_an_answer() -> None:
    outcome = step(None, Record("results", 0, 9, b"r1", b"\xffnope", []), SETTINGS, NOW)
    assert outcome.state is None
    [dead] = outcome.outputs
    assert dead.topic == "dead-letters" and dead.value == b"\xffnope"


def test_tombstone_expires_only_after_retention() -> None:
    state, _ = run([result_record(0, 1)])
    assert state is not None and due(state, SETTINGS) == (NOW + 1000, EXPIRE)
    assert step(state, control(EXPIRE), SETTINGS, NOW + 500).state is state
    assert step(state, control(EXPIRE), SETTINGS, NOW + 1000).state is None


@pytest.mark.parametrize(
    "gather", [Gather(), Gather(task="qa", of=2, deadline_ms=5, parts={1: {"x": [1.5]}}, partition=3)]
)
def test_gather_round_trips(gather: Gather) -> None:
    assert Gather.decode(gather.encode()) == gather


def test_a_gather_is_validated_as_it_is_decoded() -> None:
    # The state table's value is a typed struct: a wrong type is one DecodeError naming it, not a KeyError later.
    with pytest.raises(DecodeError, match="merge state: field 'of' must be an integer"):
        Gather.decode(b'{"of": "two"}')
    assert Gather.decode(b'{"parts": {"1": {"x": 1}}}').parts == {1: {"x": 1}}  # JSON's string keys as part numbers


def test_a_part_shed_by_infer_answers_deadline_exceeded_at_once_and_unknown_codes_are_model_errors() -> None:
    shed = Result("r1", "faq", 0, 2, {"error": {"code": "deadline_exceeded", "message": "shed"}}).encode()
    _, [answer] = run([Record("results", 4, 0, b"r1", shed, [])])
    assert answer.error is not None and answer.error.code == "deadline_exceeded"
    odd = Result("r1", "faq", 0, 2, {"error": {"code": "no-such-code", "message": "?"}}).encode()
    _, [answer] = run([Record("results", 4, 0, b"r1", odd, [])])
    assert answer.error is not None and answer.error.code == "model_error"


def test_a_thousand_held_tombstones_cost_their_size_not_orjsons_buffer() -> None:
    """orjson's output sits in a 4 KiB buffer: kept as is, merge's tombstones grew it 220 MiB in the soak."""
    import tracemalloc

    from pipeline.records import StateTable

    table = StateTable("merge-state")
    tombstone = Gather(task="faq", of=2, deadline_ms=int(NOW), done_ms=NOW, partition=3)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(1000):
            table.put(i % 12, f"request-{i}".encode(), tombstone.encode())
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < 1000 * 600, f"{held / 1000:.0f} bytes per tombstone of {len(tombstone.encode())}"
