"""What the fuzz corpus found, one test each, so the fixes stay fixed."""

from __future__ import annotations

import orjson
import pytest

from pipeline.messages import DEADLINE_HEADER, Answer, Headers
from pipeline.models.tokenizer import Tokenizer
from pipeline.records import Record
from pipeline.runtime.config import DEAD_LETTER_MAX_BYTES, producer_config
from pipeline.settings import Settings
from pipeline.stages.filter.stage import MAX_HEADER_BYTES, filter_records
from pipeline.stages.split import Splitter
from pipeline.topics import load_topics


@pytest.mark.parametrize("raw", [b"nan", b"NaN", b"inf", b"-inf", b"1e400", b"9" * 400, b"1e30", b"garbage", b""])
def test_a_deadline_header_that_is_no_time_is_no_deadline(raw: bytes) -> None:
    assert Headers.parse([(DEADLINE_HEADER, raw)]).deadline_ms is None


def test_a_sane_deadline_header_is_kept() -> None:
    assert Headers.parse([(DEADLINE_HEADER, b"1795900000000")]).deadline_ms == 1_795_900_000_000


def test_headers_over_the_limit_are_too_large() -> None:
    settings = Settings.of(embed_model="/models/minilm")
    value = orjson.dumps({"id": "r1", "task": "faq", "text": "hi?"})
    record = Record("requests", 0, 0, b"r1", value, [("big", b"h" * MAX_HEADER_BYTES)], 1.0)
    outputs = filter_records([record], settings)
    answer = Answer.decode(next(o.value for o in outputs if o.topic == "answers"))
    assert answer.error is not None and answer.error.code == "too_large"
    assert [o.topic for o in outputs] == ["answers", "dead-letters"]


def test_stage_producers_can_write_any_dead_letter() -> None:
    limit = int(load_topics(Settings())["dead-letters"].config["max.message.bytes"])
    assert producer_config(Settings(), "x")["message.max.bytes"] >= limit
    assert limit < DEAD_LETTER_MAX_BYTES


def test_split_refuses_a_filtered_record_with_an_empty_field(
    tokenizers: dict[str, Tokenizer], model_settings: Settings
) -> None:
    split = Splitter(model_settings, tokenizers)
    value = orjson.dumps({"id": "r1", "task": "faq", "text": ""})
    outputs = split([Record("filtered", 0, 0, b"r1", value, [], 1.0)])
    answer = Answer.decode(next(o.value for o in outputs if o.topic == "answers"))
    assert answer.error is not None and answer.error.code == "invalid_request"
    assert [o.topic for o in outputs] == ["answers", "dead-letters"]
