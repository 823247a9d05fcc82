"""The fuzz corpus through every stage's core, in process: no bad record may raise.

The chaos suite's fuzz scenario sends the same corpus through a real broker;
this is the fast check that finds a crash by its corpus index.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from functools import partial

import pytest

from pipeline.messages import Answer
from pipeline.models.tokenizer import Tokenizer
from pipeline.records import Output, Record, StageContext, StateTable
from pipeline.settings import Settings
from pipeline.stages.filter.stage import filter_records
from pipeline.stages.infer import Infer, InferRecords
from pipeline.stages.merge import Merger
from pipeline.stages.split import Splitter
from pipeline.tools.chaos.corpus import BadRecord, build_corpus

Core = Callable[[Sequence[Record]], list[Output]]


def test_the_corpus_is_large_deterministic_and_covers_every_kind() -> None:
    corpus = build_corpus("p-", seed=3)
    assert len(corpus) >= 1000
    assert [r.value for r in corpus] == [r.value for r in build_corpus("p-", seed=3)]
    assert [r.value for r in corpus] != [r.value for r in build_corpus("p-", seed=4)]
    kinds = {r.kind for r in corpus}
    for kind in (
        "random-bytes",
        "truncated-json",
        "nested-arrays",
        "huge-number-deadline",
        "wrong-type-text",
        "lone-surrogate",
        "odd-unicode",
        "megabyte-text",
        "null-key",
        "huge-key",
        "deadline-header",
        "traceparent-header",
        "over-topic-limit",
        "filtered-bytes",
        "parts-shape",
        "results-shape",
    ):
        assert kind in kinds
    assert Counter(r.topic for r in corpus).keys() == {"requests", "filtered", "parts", "results"}
    assert all(len(r.value or b"") > 2_097_152 for r in corpus if r.expect == "refused")


@pytest.fixture(scope="module")
def cores(model_settings: Settings, tokenizers: dict[str, Tokenizer], infer: Infer) -> dict[str, Core]:
    settings = model_settings
    merger = Merger(settings)
    merger.start(StageContext(lambda output: None, StateTable("merge-state"), lambda every_ms, fn: None))
    return {
        "requests": partial(filter_records, settings=settings),
        "filtered": Splitter(settings, tokenizers),
        "parts": InferRecords(infer),
        "results": merger,
    }


def _record(topic: str, record: BadRecord | Output, index: int = 0) -> Record:
    return Record(topic, 0, index, record.key, record.value, list(record.headers), 1.0e12)


def test_no_bad_record_crashes_a_stage(cores: dict[str, Core]) -> None:
    for bad in build_corpus("p-", seed=7):
        if bad.expect == "refused":
            continue  # the broker refuses it; no stage sees it
        queue = [_record(bad.topic, bad, bad.index)]
        first = True
        while queue:  # the record through its stage and every stage after it
            record = queue.pop()
            try:
                outputs = cores[record.topic]([record])
            except Exception as exc:  # pragma: no cover - the failure message is the point
                pytest.fail(f"corpus record #{bad.index} ({bad.kind}) crashed the {record.topic} stage: {exc!r}")
            for output in outputs:
                if output.topic == "answers":
                    Answer.decode(output.value)
                if output.topic == "dead-letters" and first:
                    assert (output.key, output.value) == (bad.key, bad.value or b""), f"#{bad.index}"
            queue.extend(_record(o.topic, o) for o in outputs if o.topic in cores)
            first = False


def test_each_recoverable_request_gets_one_error_answer_and_a_dead_letter(cores: dict[str, Core]) -> None:
    for record in build_corpus("p-", seed=7):
        if record.topic != "requests" or record.expect != "error":
            continue
        outputs = cores["requests"]([Record("requests", 0, 0, record.key, record.value, list(record.headers), 1e12)])
        answers = [Answer.decode(o.value) for o in outputs if o.topic == "answers"]
        dead = [o for o in outputs if o.topic == "dead-letters"]
        assert [a.id for a in answers] == [record.answer_id], f"#{record.index} {record.kind}"
        assert answers[0].status == "error"
        assert [(d.key, d.value) for d in dead] == [(record.key, record.value or b"")], f"#{record.index}"
