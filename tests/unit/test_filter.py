"""filter's core, called directly: clean requests pass, every bad one is answered and dead-lettered."""

from __future__ import annotations

import orjson
import pytest

from pipeline.messages import Answer, Headers, Request, now_ms
from pipeline.records import Record
from pipeline.settings import Settings
from pipeline.stages.filter.stage import build, filter_records, normalise


@pytest.fixture
def settings() -> Settings:
    return Settings.of(embed_model="/models/minilm", qa_model="/models/qa", max_text_chars=50, max_request_bytes=400)


def record(value: bytes | None, key: bytes | None = b"k1", headers: list[tuple[str, bytes]] | None = None) -> Record:
    return Record("requests", 3, 42, key, value, headers or [], timestamp_ms=now_ms())


def test_normalise_whitespace_nfc_and_controls() -> None:
    assert normalise("  Cafe\u0301 \t is\x00  open\r\n\r\n ok\u200b ") == "Café is open\n\nok"


def test_clean_request_passes_with_deadline_trace_and_hops(settings: Settings) -> None:
    value = orjson.dumps({"id": "r1", "task": "faq", "text": "  How do   I reset my password? "})
    [out] = filter_records([record(value)], settings)
    assert out.topic == "filtered" and out.key == b"r1"
    request = Request.decode(out.value)
    assert request.text == "How do I reset my password?"
    headers = Headers.parse(out.headers)
    assert request.deadline_ms is None  # the deadline travels in the header alone
    assert headers.deadline_ms is not None and headers.deadline_ms > now_ms() + 20_000  # the default timeout
    assert headers.traceparent and set(headers.hops) == {"requested", "filter"}


def test_explicit_deadline_header_is_kept(settings: Settings) -> None:
    deadline = int(now_ms() + 5000)
    value = orjson.dumps({"id": "r1", "task": "embed", "text": "hello"})
    [out] = filter_records([record(value, headers=[("pipeline-deadline-ms", str(deadline).encode())])], settings)
    assert Headers.parse(out.headers).deadline_ms == deadline


@pytest.mark.parametrize(
    ("value", "code", "fragment"),
    [
        (b"{oops", "invalid_request", "not valid UTF-8 JSON"),
        (b"\xff\xfe{}", "invalid_request", "not valid UTF-8 JSON"),
        (b'{"id": "r1"}', "invalid_request", "missing field 'task'"),
        (b'{"id": "r1", "task": "faq", "text": 3}', "invalid_request", "must be a string"),
        (b'{"id": "r1", "task": "poetry", "text": "hi"}', "invalid_request", "unknown task 'poetry'"),
        (b'{"id": "r1", "task": "classify", "text": "hi"}', "invalid_request", "not enabled"),
        (b'{"id": "r1", "task": "qa", "question": "who?"}', "invalid_request", "needs field 'context'"),
        (b'{"id": "r1", "task": "faq", "text": " \\u0000 \\t "}', "invalid_request", "is empty"),
        (orjson.dumps({"id": "r1", "task": "faq", "text": "x" * 51}), "too_large", "51 characters"),
        (orjson.dumps({"id": "r1", "task": "faq", "text": "x" * 500}), "too_large", "bytes; the limit is 400"),
        (orjson.dumps({"id": "r1", "task": "faq", "text": "hi", "deadline_ms": 1000}), "deadline_exceeded", "passed"),
    ],
)
def test_bad_requests_get_an_error_answer_and_a_dead_letter(
    settings: Settings, value: bytes, code: str, fragment: str
) -> None:
    headers = [("tenant", b"acme")]
    answer_out, dead = filter_records([record(value, key=b"r1", headers=headers)], settings)
    answer = Answer.decode(answer_out.value)
    assert answer_out.topic == "answers" and answer.id == "r1" and answer.status == "error"
    assert answer.error is not None and answer.error.code == code and fragment in answer.error.message
    assert dead.topic == "dead-letters" and dead.value == value and dead.key == b"r1"
    reasons = dict(dead.headers)
    assert reasons["pipeline-dlq-code"] == code.encode() and reasons["tenant"] == b"acme"
    assert reasons["pipeline-dlq-source"] == b"requests[3]@42"


def test_unrecoverable_id_still_dead_letters(settings: Settings) -> None:
    [dead] = filter_records([record(b"\xff\xff", key=None)], settings)
    assert dead.topic == "dead-letters" and dead.value == b"\xff\xff"


def test_one_bad_record_does_not_stop_the_batch(settings: Settings) -> None:
    good = orjson.dumps({"id": "ok", "task": "embed", "text": "fine"})
    outputs = filter_records([record(b"junk", key=b"bad"), record(good, key=b"ok")], settings)
    assert [o.topic for o in outputs] == ["answers", "dead-letters", "filtered"]


def test_sheds_a_request_that_cannot_make_its_deadline(settings: Settings) -> None:
    from pipeline.stages.filter.queue_wait import PartitionQueue, QueueWait

    # infer: every partition of parts has 80 records waiting and no rate yet: the heads' 7.5 s stand in.
    reading = {"split": {0: PartitionQueue(5, 5, 0.0)}, "infer": {p: PartitionQueue(10, 90, 7.5) for p in range(4)}}
    queue = QueueWait(settings, probe=lambda: reading)
    queue.update(reading)
    soon = int(now_ms()) + 10_000  # less than 1.5 x 7.5 s
    late = int(now_ms()) + 20_000
    near = orjson.dumps({"id": "r-near", "task": "faq", "text": "Where is my order?", "deadline_ms": soon})
    far = orjson.dumps({"id": "r-far", "task": "faq", "text": "Where is my order?", "deadline_ms": late})
    outputs = filter_records([record(near, key=b"r-near"), record(far, key=b"r-far")], settings, queue=queue)
    queue.stop()
    by_topic = {out.topic: out for out in outputs}
    assert sorted(by_topic) == ["answers", "dead-letters", "filtered"], [o.topic for o in outputs]
    answer = Answer.decode(by_topic["answers"].value)
    assert answer.id == "r-near" and answer.error is not None
    assert answer.error.code == "deadline_exceeded" and "7500 ms" in answer.error.message
    assert by_topic["filtered"].key == b"r-far"


def test_a_stale_prediction_sheds_nothing(settings: Settings) -> None:
    from pipeline.stages.filter.queue_wait import PartitionQueue, QueueWait

    queue = QueueWait(settings)
    queue.update({"infer": {0: PartitionQueue(0, 50, 100.0)}})
    request = Request(id="r1", task="embed", text="hello")
    assert queue.wait_ms(request) == 100_000.0
    queue.at -= 60  # read a minute ago
    assert queue.wait_ms(request) == 0.0


def test_the_runtime_opens_the_probe_the_shedding_model_reads(settings: Settings) -> None:
    """filter watches the queues downstream, but the probe (Kafka) is opened for it, not imported by it."""
    import threading

    from pipeline.stages.filter.queue_wait import DOWNSTREAM, PartitionQueue, QueueWait

    logic = build(settings)
    assert isinstance(logic.watcher, QueueWait) and list(logic.watcher.downstream) == DOWNSTREAM
    queue: QueueWait = logic.watcher
    read, closed = threading.Event(), threading.Event()

    def probe() -> dict[str, dict[int, PartitionQueue]]:
        read.set()
        return {"infer": {0: PartitionQueue(0, 50, 100.0)}}

    queue.watch(lambda: (probe, closed.set))
    queue.start()
    try:
        assert read.wait(10), "the probe the runtime opened is read once the member starts"
    finally:
        queue.stop()
    assert closed.wait(10), "and closed when the stage stops"
    assert queue.wait_ms(Request(id="r1", task="embed", text="hello")) == 100_000.0
