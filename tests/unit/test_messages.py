"""Message encode/decode: round trips, and one typed error for every kind of bad bytes."""

from __future__ import annotations

import pytest

from pipeline.errors import DecodeError
from pipeline.messages import Answer, Headers, Part, Request, Result, recover_request_id


def test_request_round_trip() -> None:
    request = Request(id="r1", task="qa", question="Who?", context="Ada wrote it.", deadline_ms=123)
    assert Request.decode(request.encode()) == request


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (None, "empty value"),
        (b"{not json", "not valid UTF-8 JSON"),
        (b"\xff\xfe\x00", "not valid UTF-8 JSON"),
        (b"[1, 2]", "expected a JSON object"),
        (b'{"task": "faq"}', "missing field 'id'"),
        (b'{"id": 7, "task": "faq"}', "field 'id' must be a string"),
        (b'{"id": "", "task": "faq"}', "must not be empty"),
        (b'{"id": "x", "task": "faq", "text": 5}', "field 'text' must be a string"),
        (b'{"id": "x", "task": "faq", "deadline_ms": true}', "got boolean"),
    ],
)
def test_bad_requests_raise_decode_error(data: bytes | None, fragment: str) -> None:
    with pytest.raises(DecodeError, match=fragment):
        Request.decode(data)


def test_part_and_result_round_trip_and_range_check() -> None:
    part = Part(id="r1", task="embed", part=1, of=3, input_ids=[101, 7, 102], meta={"tokens": 3})
    assert Part.decode(part.encode()) == part
    assert part.key == "r1#1"
    result = Result(id="r1", task="embed", part=2, of=3, output={"tokens": 3})
    assert Result.decode(result.encode()) == result
    with pytest.raises(DecodeError, match="out of range"):
        Result.decode(b'{"id": "r1", "task": "embed", "part": 3, "of": 3, "output": {}}')


def test_answer_round_trip_keeps_error_details() -> None:
    answer = Answer.failure(
        "r1", "partial", "1 of 3 parts missed the deadline", task="qa", result={"a": 1}, missing=[2]
    )
    decoded = Answer.decode(answer.encode())
    assert decoded == answer
    assert not decoded.ok and decoded.error is not None and decoded.error.missing == [2]
    ok = Answer.success("r2", "faq", {"reply": "hi"})
    assert Answer.decode(ok.encode()).ok
    assert b"missing" not in Answer.failure("r3", "invalid_request", "bad").encode()


def test_headers_round_trip_and_latency() -> None:
    headers = Headers(deadline_ms=5000, traceparent="00-abc-def-01", other=[("tenant", b"acme")])
    headers = headers.stamped("requested", 1000.0).stamped("filter", 1002.5).stamped("split", 1010.0)
    parsed = Headers.parse(headers.to_list())
    assert parsed.deadline_ms == 5000
    assert parsed.traceparent == "00-abc-def-01"
    assert parsed.other == [("tenant", b"acme")]
    assert parsed.latency_ms() == {"filter": 2.5, "split": 7.5}


def test_malformed_pipeline_headers_are_dropped_not_fatal() -> None:
    parsed = Headers.parse([("pipeline-deadline-ms", b"soon"), ("pipeline-hop-filter", b"x"), ("a", None)])
    assert parsed.deadline_ms is None and parsed.hops == {} and parsed.other == [("a", b"")]


def test_recover_request_id_prefers_value_then_key() -> None:
    assert recover_request_id(b'{"id": "from-value"}', b"from-key") == "from-value"
    assert recover_request_id(b"\xff garbage", b"from-key") == "from-key"
    assert recover_request_id(b"\xff", None) is None
