"""generate with grounded replies: the lead streams first, each sentence is checked, chunks equal the answer."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from pipeline.messages import Answer, Chunk, Headers, Prompt
from pipeline.records import Output, Record, StageContext, StateTable
from pipeline.settings import PROJECT_ROOT, Settings
from pipeline.stages.generate.grounding import fact_sentences
from pipeline.stages.generate.stage import Generate
from tests.chat_engines import CharTokenizer, FixedEngine

KB = {e["id"]: e["answer"] for e in json.loads((PROJECT_ROOT / "pipeline/data/faq_shop.json").read_text())["entries"]}
RETURN_FIRST, RETURN_SECOND = fact_sentences(KB["return-policy"])


def entry(question: str, entry_id: str, matched: bool = True, score: float = 0.9) -> dict[str, object]:
    return {"question": question, "entry": entry_id, "match": question, "answer": KB[entry_id], "score": score,
            "matched": matched}  # fmt: skip


def record(
    rid: str, text: str, entries: list[dict[str, object]], session: str | None = None, offset: int = 0
) -> Record:
    prompt = Prompt(rid, text, session, None, entries)
    return Record("prompts", 0, offset, prompt.key, prompt.encode(), Headers().stamped("requested").to_list())


class Stage:
    def __init__(self, reply: str, **settings: object) -> None:
        self.engine = FixedEngine(reply)
        self.sent: list[Output] = []
        self.generate = Generate(Settings.of(chat_model="x", **settings), self.engine, CharTokenizer(), "v1")  # type: ignore[arg-type]
        self.generate.start(StageContext(self.sent.append, StateTable("sessions"), lambda every_ms, fn: None))

    def ask(self, rec: Record) -> tuple[Answer, list[str]]:
        outputs = self.generate([rec])
        answer = next(Answer.decode(o.value) for o in outputs if o.topic == "answers")
        rid = Prompt.decode(rec.value).id.encode()
        chunks = [Chunk.decode(o.value) for o in self.sent if o.topic == "answer-chunks" and o.key == rid]
        assert [c.seq for c in chunks] == list(range(len(chunks))), "each chunk once, in order"
        return answer, [c.delta for c in chunks]


@pytest.fixture
def stages() -> Iterator[list[Stage]]:
    made: list[Stage] = []
    yield made
    for stage in made:
        stage.engine.close()


def make(stages: list[Stage], reply: str, **settings: object) -> Stage:
    stages.append(Stage(reply, **settings))
    return stages[-1]


def test_the_lead_streams_first_then_checked_sentences_and_the_answer_is_exactly_the_chunks(
    stages: list[Stage],
) -> None:
    stage = make(stages, " Start a return under Account > Orders. Returns are free for 60 days. Then more.")
    answer, chunks = stage.ask(
        record("r1", "Can I return shoes that don't fit?", [entry("Can I return shoes?", "return-policy")])
    )
    assert chunks[0] == RETURN_FIRST, "the facts' best sentence is the first thing the customer sees"
    assert chunks[1] == " Start a return under Account > Orders."
    assert chunks[2] == " " + RETURN_SECOND, "the invented 60 days never streams: the closest fact stands in"
    assert answer.ok and answer.result is not None
    assert answer.result["reply"] == "".join(chunks)
    assert "60" not in answer.result["reply"]
    grounding = answer.result["grounding"]
    assert grounding["replaced"] == 1 and grounding["kept"] == 1 and not grounding["fallback"]
    assert grounding["rejected"] == [{"sentence": "Returns are free for 60 days.", "reason": "number 60"}]
    assert answer.result["stopped"] == "checked" and answer.result["first_token_ms"] is not None


def test_without_grounding_the_invented_sentence_streams(stages: list[Stage]) -> None:
    stage = make(stages, " Returns are free for 60 days.", chat_grounded=False)
    answer, _ = stage.ask(record("r1", "Can I return shoes?", [entry("Can I return shoes?", "return-policy")]))
    assert answer.result is not None and "60 days" in answer.result["reply"] and "grounding" not in answer.result


def test_a_follow_up_without_a_topic_draws_on_the_entry_of_the_turn_before(stages: list[Stage]) -> None:
    stage = make(stages, " Import duties are paid by the customer.")
    stage.ask(record("r1", "Do you ship to Canada?", [entry("Do you ship to Canada?", "international-shipping")], "s"))
    # Retrieved alone, the follow-up points at domestic shipping times, unsure.
    follow_up = [entry("How long does that take?", "shipping-times", score=0.5)]
    answer, chunks = stage.ask(record("r2", "How long does that take?", follow_up, "s", 1))
    assert answer.result is not None
    assert "7-14 business days" in chunks[0], "the lead answers the conversation's topic"
    assert [e["entry"] for e in answer.result["entries"]][:1] == ["international-shipping"]


def test_a_message_nothing_matched_gets_the_fallback_text_and_no_model_run(stages: list[Stage]) -> None:
    stage = make(stages, " We sell rockets.")
    answer, chunks = stage.ask(
        record("r1", "Do you sell rockets?", [entry("Do you sell rockets?", "gift-cards", False)])
    )
    assert answer.result is not None and answer.result["generated"] is False
    assert "rockets" not in "".join(chunks[1:]) and chunks == [answer.result["reply"]]


def test_the_cached_copy_of_a_sessions_first_reply_names_no_session(stages: list[Stage]) -> None:
    stage = make(stages, " Start a return under Account > Orders.")
    outputs = stage.generate(
        [record("r1", "Can I return shoes?", [entry("Can I return shoes?", "return-policy")], "s-1")]
    )
    [cached] = [Answer.decode(o.value) for o in outputs if o.topic == "answer-cache"]
    assert cached.result is not None and cached.result["session"] is None, "another customer gets this copy"
    [answered] = [Answer.decode(o.value) for o in outputs if o.topic == "answers"]
    assert answered.result is not None and answered.result["session"] == "s-1"


def test_a_chinese_chat_message_is_retrieved_from_the_chinese_shop() -> None:
    """chat routes by language as faq does: before, a Chinese message met the English knowledge base and got nothing."""
    from pipeline.messages import Request
    from pipeline.tasks.language import request_route, route_settings

    settings = Settings.of(chat_model="x")
    request = Request(id="z", task="chat", text="我的快递到哪了？")
    assert request_route(request, settings) == "chat:zh"
    assert route_settings(request, settings).faq.faq_kb == settings.faq.faq_multilingual_kb


def test_a_short_follow_up_keeps_to_the_one_entry_its_lead_comes_from(stages: list[Stage]) -> None:
    stage = make(stages, " Standard shipping is free over $50.")
    stage.ask(record("r1", "Is standard shipping free?", [entry("Is standard shipping free?", "shipping-costs")], "s"))
    # "And express?" alone retrieves delivery times; the conversation was about what shipping costs.
    answer, chunks = stage.ask(
        record("r2", "And express?", [entry("And express?", "shipping-times", score=0.45)], "s", 1)
    )
    assert answer.result is not None
    assert "$12.95" in chunks[0], "Express costs $12.95: the lead answers the conversation's question"
    assert [e["entry"] for e in answer.result["entries"]] == ["shipping-costs"], "no drift into the other entry"
