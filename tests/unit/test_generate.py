"""generate's handler over a deterministic engine: streaming, answers, sessions, deadlines, expiry, batching."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future

import orjson
import pytest

from pipeline.messages import Answer, Chunk, Control, Headers, Prompt, now_ms
from pipeline.models.generator import Generated
from pipeline.records import Output, Record, StageContext, StateTable
from pipeline.settings import Settings
from pipeline.stages.generate.sessions import Session
from pipeline.stages.generate.stage import EXPIRE_SCAN_MS, Generate
from tests.chat_engines import CharTokenizer, ScriptedEngine

ENTRY = {"question": "Where is it?", "entry": "track", "match": "Where is my order?", "answer": "Use the link.",
         "score": 0.9, "matched": True}  # fmt: skip


@pytest.fixture
def engine() -> Iterator[ScriptedEngine]:
    engine = ScriptedEngine()
    yield engine
    engine.close()


class Sent:
    def __init__(self) -> None:
        self.outputs: list[Output] = []
        self.lock = threading.Lock()

    def __call__(self, output: Output) -> None:
        with self.lock:
            self.outputs.append(output)

    def chunks(self, request_id: str) -> list[Chunk]:
        return [
            Chunk.decode(o.value) for o in self.outputs if o.topic == "answer-chunks" and o.key == request_id.encode()
        ]


def make_stage(engine: ScriptedEngine, **settings: object) -> tuple[Generate, Sent, StateTable]:
    """The stage's mechanics (streaming, sessions, deadlines) on the model's raw text; grounding has its own tests."""
    settings = {"chat_grounded": False, **settings}
    stage = Generate(Settings.of(chat_model="x", **settings), engine, CharTokenizer(), "v1")  # type: ignore[arg-type]
    sent, table = Sent(), StateTable("sessions")
    scheduled: list[float] = []
    stage.start(StageContext(sent, table, lambda every_ms, fn: scheduled.append(every_ms)))
    assert scheduled == [EXPIRE_SCAN_MS], "the expiry scan runs on the runtime's clock"
    return stage, sent, table


def prompt_record(rid: str, text: str, session: str | None = None, offset: int = 0, deadline: float | None = None,
                  max_tokens: int | None = None) -> Record:  # fmt: skip
    prompt = Prompt(rid, text, session, max_tokens, [ENTRY])
    headers = Headers(deadline_ms=int(deadline) if deadline else None).stamped("requested").to_list()
    return Record("prompts", 0, offset, prompt.key, prompt.encode(), headers)


def answers(outputs: list[Output]) -> dict[str, Answer]:
    return {o.key.decode(): Answer.decode(o.value) for o in outputs if o.topic == "answers" and o.key}


def test_reply_streams_in_chunks_and_the_final_answer_has_the_whole_text(engine: ScriptedEngine) -> None:
    stage, sent, _ = make_stage(engine)
    outputs = stage([prompt_record("r1", "Where is my parcel?")])
    answer = answers(outputs)["r1"]
    assert answer.ok and answer.result is not None
    assert answer.result["reply"] == "You said: Where is my parcel?."
    chunks = sent.chunks("r1")
    assert [c.seq for c in chunks] == list(range(len(chunks)))
    assert "".join(c.delta for c in chunks) == answer.result["reply"]
    assert answer.result["entries"] == [ENTRY]
    assert answer.result["tokens"]["completion"] == len(answer.result["reply"])
    assert answer.result["first_token_ms"] is not None and answer.result["tokens_per_s"] > 0
    # No session: cacheable, nothing in the table.
    assert [o.topic for o in outputs] == ["answers", "answer-cache"]


def test_a_follow_up_has_the_earlier_turn_in_its_prompt(engine: ScriptedEngine) -> None:
    stage, _sent, table = make_stage(engine)
    first = stage([prompt_record("r1", "How do I return shoes?", session="s1")])
    # The first turn had no history: its reply may serve a later sessionless request.
    assert [o.topic for o in first] == ["answers", "sessions", "answer-cache"]
    session = Session.decode(table.get(0, b"s1"))
    assert [(t.user, t.assistant) for t in session.turns] == [
        ("How do I return shoes?", "You said: How do I return shoes?.")
    ]
    seen: list[list[dict[str, str]]] = []
    original = stage.tokenizer.apply_chat_template

    def spy(messages: list[dict[str, str]], **kw: bool) -> str:
        seen.append(messages)
        return original(messages, **kw)

    stage.tokenizer.apply_chat_template = spy  # type: ignore[method-assign]
    second = stage([prompt_record("r2", "And how long does that take?", session="s1", offset=1)])
    assert "Customer: How do I return shoes?\nYou: You said: How do I return shoes?." in seen[0][1]["content"]
    assert answers(second)["r2"].result["turns_in_prompt"] == 1  # type: ignore[index]
    # With history the reply is not cached.
    assert "answer-cache" not in [o.topic for o in second]
    assert len(Session.decode(table.get(0, b"s1")).turns) == 2


def test_messages_of_one_session_in_one_batch_are_answered_in_order(engine: ScriptedEngine) -> None:
    stage, _, table = make_stage(engine)
    outputs = stage([prompt_record("a", "one", session="s"), prompt_record("b", "two", session="s", offset=1)])
    assert answers(outputs)["b"].result["turns_in_prompt"] == 1  # type: ignore[index]
    assert [t.user for t in Session.decode(table.get(0, b"s")).turns] == ["one", "two"]


def test_a_replayed_prompt_of_an_answered_turn_is_skipped(engine: ScriptedEngine) -> None:
    stage, _, _ = make_stage(engine)
    stage([prompt_record("a", "one", session="s")])
    assert stage([prompt_record("a", "one", session="s")]) == []


def test_the_deadline_stops_generation_with_a_partial_answer(engine: ScriptedEngine) -> None:
    slow = ScriptedEngine(step_s=0.05)
    try:
        stage, _sent, _ = make_stage(slow)  # type: ignore[arg-type]
        outputs = stage([prompt_record("r", "a long message to repeat back", deadline=now_ms() + 300)])
    finally:
        slow.close()
    answer = answers(outputs)["r"]
    assert answer.error is not None and answer.error.code == "partial"
    assert answer.result is not None and 0 < len(answer.result["reply"]) < len(
        "You said: a long message to repeat back."
    )
    assert answer.result["stopped"] == "stopped"
    assert "answer-cache" not in [o.topic for o in outputs]  # partial answers are never cached


def test_past_its_deadline_a_prompt_is_not_generated(engine: ScriptedEngine) -> None:
    stage, sent, _ = make_stage(engine)
    answer = answers(stage([prompt_record("r", "hi", deadline=now_ms() - 1)]))["r"]
    assert answer.error is not None and answer.error.code == "deadline_exceeded"
    assert sent.chunks("r") == []


class ExpiredInQueue:
    """An engine whose sequences end at their deadline before their first step (no room in time)."""

    def submit(self, prompt_ids: list[int], max_new_tokens: int, on_token: object,
               deadline_ms: int | None = None, process: object = None) -> Future[Generated]:  # fmt: skip
        assert deadline_ms is not None, "the stage hands the request's deadline to the engine"
        future: Future[Generated] = Future()
        future.set_result(Generated(tokens=[], stopped="stopped", prompt_tokens=len(prompt_ids)))
        return future

    def close(self) -> None:
        pass


def test_a_prompt_the_engine_never_started_is_deadline_exceeded_and_leaves_no_turn() -> None:
    stage, sent, _ = make_stage(ExpiredInQueue())  # type: ignore[arg-type]
    outputs = stage([prompt_record("r", "hi", session="s", deadline=now_ms() + 60_000)])
    answer = answers(outputs)["r"]
    assert answer.error is not None and answer.error.code == "deadline_exceeded"
    assert [o.topic for o in outputs] == ["answers"], "no session turn, no cache entry"
    assert sent.chunks("r") == []


def test_max_tokens_is_bounded_by_the_setting(engine: ScriptedEngine) -> None:
    stage, _, _ = make_stage(engine, chat_max_tokens=5)
    answer = answers(stage([prompt_record("r", "a long message", max_tokens=1000)]))["r"]
    assert answer.ok and answer.result is not None
    assert answer.result["reply"] == "You s" and answer.result["stopped"] == "length"


def test_batches_run_at_once_join_one_engine_batch(engine: ScriptedEngine) -> None:
    slow = ScriptedEngine(step_s=0.01)
    try:
        stage, _, _ = make_stage(slow)  # type: ignore[arg-type]
        results: list[list[Output]] = []
        threads = [threading.Thread(target=lambda i=i: results.append(stage([prompt_record(f"r{i}", "x" * 20)])))
                   for i in range(4)]  # fmt: skip
        for thread in threads:
            thread.start()
            time.sleep(0.02)  # each arrives while the others are being written
        for thread in threads:
            thread.join(10)
        assert slow.max_active == 4 and len(results) == 4
    finally:
        slow.close()


def test_sequences_in_the_engine_are_bounded_by_the_setting() -> None:
    slow = ScriptedEngine(step_s=0.01)
    try:
        stage, _, _ = make_stage(slow, generate_max_sequences=2)  # type: ignore[arg-type]
        threads = [threading.Thread(target=stage, args=([prompt_record(f"r{i}", "x" * 10)],)) for i in range(5)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert slow.max_active == 2
    finally:
        slow.close()


def test_idle_sessions_expire_through_a_control_record(engine: ScriptedEngine) -> None:
    stage, sent, table = make_stage(engine, session_ttl_ms=50)
    stage([prompt_record("r", "hi", session="s")])
    stage.tick(now_ms())  # not idle long enough yet
    assert not [o for o in sent.outputs if o.topic == "prompts"]
    time.sleep(0.06)
    stage.tick(now_ms())
    expire = [o for o in sent.outputs if o.topic == "prompts"]
    assert len(expire) == 1 and Control.of(expire[0].headers) is Control.EXPIRE and expire[0].key == b"s"
    outputs = stage([Record("prompts", 0, 5, b"s", b"{}", expire[0].headers)])
    assert outputs == [Output("sessions", b"s", None, partition=0)]
    assert table.get(0, b"s") is None


def test_a_bad_prompt_is_answered_and_dead_lettered(engine: ScriptedEngine) -> None:
    stage, _, _ = make_stage(engine)
    outputs = stage([Record("prompts", 0, 0, b"x", orjson.dumps({"id": "bad"}))])
    assert [o.topic for o in outputs] == ["answers", "dead-letters"]


def test_a_message_in_a_language_the_model_does_not_write_gets_the_retrieved_answer(engine: ScriptedEngine) -> None:
    stage, sent, table = make_stage(engine)
    zh_entry = {**ENTRY, "answer": "订单发货后我们会通过邮件发送物流跟踪链接。"}
    prompt = Prompt("z1", "我的快递到哪了？", "s-zh", None, [zh_entry])
    headers = Headers().stamped("requested").to_list()
    outputs = stage([Record("prompts", 0, 0, prompt.key, prompt.encode(), headers)])
    answer = answers(outputs)["z1"]
    assert answer.ok and answer.result is not None
    assert answer.result["reply"] == zh_entry["answer"] and answer.result["generated"] is False
    assert [c.delta for c in sent.chunks("z1")] == [zh_entry["answer"]], "streamed like a generated reply"
    assert Session.decode(table.get(0, b"s-zh")).turns[-1].assistant == zh_entry["answer"], "the turn is kept"
