"""Sessions (trimming, expiry, encoding), the grounded prompt, streaming text, and the chat task's hand-off."""

from __future__ import annotations

import orjson
import pytest

from pipeline.errors import DecodeError
from pipeline.messages import Prompt, Result
from pipeline.models.generator import TextStream
from pipeline.stages.generate.prompting import INSTRUCTIONS, NO_FACTS, chat_messages, facts, prompt_ids
from pipeline.stages.generate.sessions import Session, Turn
from pipeline.tasks.chat import ChatTask
from tests.chat_engines import CharTokenizer

MATCHED = {"question": "Where?", "entry": "track", "match": "Where is my order?", "answer": "Use the link.",
           "score": 0.9, "matched": True}  # fmt: skip
UNMATCHED = {**MATCHED, "entry": "other", "matched": False, "answer": "Irrelevant."}


def test_adding_a_turn_drops_the_oldest_past_the_token_budget() -> None:
    session = Session()
    for i in range(5):
        session.add(Turn(f"r{i}", f"q{i}", f"a{i}", tokens=40), budget_tokens=100, now=float(i))
    assert [t.request for t in session.turns] == ["r3", "r4"]
    assert session.last_ms == 4.0
    session.add(Turn("big", "q", "a", tokens=500), budget_tokens=100, now=5.0)
    assert session.turns == []  # a turn larger than the budget is not kept either


def test_recent_turns_are_the_newest_that_fit_oldest_first() -> None:
    session = Session([Turn("a", "1", "1", 30), Turn("b", "2", "2", 30), Turn("c", "3", "3", 50)], 0.0)
    assert [t.request for t in session.recent(79)] == ["c"]
    assert [t.request for t in session.recent(80)] == ["b", "c"]
    assert [t.request for t in session.recent(110)] == ["a", "b", "c"]
    assert session.recent(10) == []


def test_sessions_expire_after_the_idle_time_and_round_trip() -> None:
    session = Session([Turn("a", "hello", "hi — “there”", 3)], last_ms=1000.0)
    assert not session.expired(1500.0, ttl_ms=1000)
    assert session.expired(2000.0, ttl_ms=1000)
    assert Session.decode(session.encode()) == session
    assert Session.decode(None) == Session()
    with pytest.raises(DecodeError):
        Session.decode(b'{"turns": [[1, 2]], "last_ms": 0}')


def test_the_prompt_has_instructions_facts_history_and_the_message_in_order() -> None:
    prompt = Prompt("r", "And how long does that take?", "s", None, [MATCHED, UNMATCHED, MATCHED])
    messages = chat_messages(prompt, [Turn("r0", "Can I return shoes?", "Yes, within 30 days.", 12)])
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[0]["content"] == INSTRUCTIONS
    text = messages[1]["content"]
    assert text.startswith("Earlier in this conversation:\nCustomer: Can I return shoes?\nYou: Yes, within 30 days.")
    # Matched entries only, each once, then the message.
    assert text.count("Use the link.") == 1 and "Irrelevant." not in text
    assert text.endswith("Question: And how long does that take?")
    assert "Earlier" not in chat_messages(prompt, [])[1]["content"]
    assert facts([UNMATCHED]) == NO_FACTS


def test_prompt_ids_render_the_chat_template_ending_at_the_reply() -> None:
    tokenizer = CharTokenizer()
    ids = prompt_ids(tokenizer, [{"role": "user", "content": "hi"}])
    assert tokenizer.decode(ids) == "<user>hi\n<assistant>"


class ByteTokenizer:
    """Token = one UTF-8 byte: a character may span tokens."""

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return bytes(ids).decode("utf-8", errors="replace")


def test_text_stream_never_sends_half_a_character() -> None:
    stream = TextStream(ByteTokenizer())
    deltas = [stream.push(b) for b in "é!".encode()]
    assert deltas == ["", "é", "!"]
    assert stream.finish() == "" and stream.text == "é!"


def test_the_chat_task_merges_into_a_prompt_keyed_by_session() -> None:
    carry = {"text": "Where is it? Can I pay by card?", "session": "s9", "max_tokens": 50}
    results = [
        Result("r", "chat", i, 2, {**MATCHED, "question": q, "request": carry})
        for i, q in enumerate(("Where is it?", "Can I pay by card?"))
    ]
    value = ChatTask().merge(results, 2)
    assert value.pop("key") == "s9"
    prompt = Prompt.decode(orjson.dumps(value))
    assert prompt == Prompt("r", carry["text"], "s9", 50, [{**MATCHED, "question": "Where is it?"},
                                                           {**MATCHED, "question": "Can I pay by card?"}])  # fmt: skip
    assert Prompt("r", "x").key == b"r"


def test_reassembly_drops_repeated_chunks_and_waits_for_gaps() -> None:
    from pipeline.messages import Chunk, Reassembly

    r = Reassembly()
    assert r.push(Chunk("r", 0, "Hel")) == ["Hel"]
    assert r.push(Chunk("r", 0, "Hel")) == []  # a repeat after a crash
    assert r.push(Chunk("r", 2, "!")) == []  # early: waits for 1
    assert r.push(Chunk("r", 1, "lo")) == ["lo", "!"]
    assert r.push(Chunk("r", 1, "lo")) == []
    assert r.text == "Hello!"
    assert r.rest("Hello! Bye.") == " Bye." and r.rest("Something else") == ""


def test_merge_hands_a_complete_chat_request_to_prompts_not_answers() -> None:
    from pipeline.messages import Headers, now_ms
    from pipeline.records import Record
    from pipeline.settings import Settings
    from pipeline.stages.merge import step

    carry = {"text": "Where is it?", "session": "s1", "max_tokens": None}
    now = now_ms()
    headers = Headers(deadline_ms=int(now + 5000)).stamped("infer").to_list()
    result = Result("r1", "chat", 0, 1, {**MATCHED, "request": carry})
    outcome = step(None, Record("results", 3, 0, b"r1", result.encode(), headers), Settings(), now)
    [output] = outcome.outputs
    assert output.topic == "prompts" and output.key == b"s1"
    assert Prompt.decode(output.value) == Prompt("r1", "Where is it?", "s1", None, [MATCHED])
    assert outcome.state is not None and outcome.state.done_ms == now  # handed off once: duplicates change nothing
    again = step(outcome.state, Record("results", 3, 1, b"r1", result.encode(), headers), Settings(), now)
    assert again.outputs == []


def test_chat_is_disabled_without_a_reply_model() -> None:
    from pipeline.errors import InvalidRequestError
    from pipeline.messages import Request
    from pipeline.settings import Settings
    from pipeline.stages.filter.stage import check_request

    settings = Settings.of(chat_model="")
    assert settings.model_for("chat") == "" and settings.model_for("faq")
    with pytest.raises(InvalidRequestError, match="PIPELINE_CHAT_MODEL"):
        check_request(Request("r", "chat", text="hi"), settings, 0.0)
