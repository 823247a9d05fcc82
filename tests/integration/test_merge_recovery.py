"""merge's promises over a real broker: survives SIGKILL, answers on time, never twice."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future

import pytest
from confluent_kafka import Producer

from pipeline.client import Client
from pipeline.local.supervisor import Supervisor
from pipeline.messages import Answer, Control, Expect, Headers, Result, now_ms
from pipeline.runtime.config import producer_config
from pipeline.settings import Settings
from pipeline.tasks.faq.kb import load_kb
from tests.integration.harness import read_topic, running_pipeline

pytestmark = pytest.mark.integration


def fresh_settings(broker: str) -> Settings:
    return Settings.from_env(bootstrap_servers=broker, prefix=f"mr{uuid.uuid4().hex[:8]}-")


def wait_all(futures: dict[str, Future[Answer]], timeout_s: float) -> dict[str, Answer]:
    """Collect answers (the harness restarts dead members meanwhile)."""
    answers: dict[str, Answer] = {}
    deadline = time.monotonic() + timeout_s
    while len(answers) < len(futures) and time.monotonic() < deadline:
        for rid, future in futures.items():
            if rid not in answers and future.done():
                answers[rid] = future.result()
        time.sleep(0.2)
    return answers


@pytest.fixture
def full_pipeline(broker: str) -> Iterator[tuple[Settings, Supervisor]]:
    settings = fresh_settings(broker)
    counts = {"filter": 1, "split": 1, "infer": 1, "merge": 1}
    with running_pipeline(settings, counts) as supervisor:
        yield settings, supervisor


def test_merge_killed_mid_stream_loses_nothing_and_answers_once(full_pipeline: tuple[Settings, Supervisor]) -> None:
    settings, supervisor = full_pipeline
    questions = [entry.questions[0] for entry in load_kb(settings.faq.faq_kb)]
    total = 300
    with Client(settings) as client:
        futures: dict[str, Future[Answer]] = {}

        def send() -> None:
            for i in range(total):
                # Several sub-questions each, so merge holds half-gathered requests when killed.
                first, second = questions[i % len(questions)], questions[(i * 7 + 1) % len(questions)]
                text = f"{first.rstrip('?.! ')}? {second.rstrip('?.! ')}?"
                rid = f"kill-{i}"
                futures[rid] = client.send({"id": rid, "task": "faq", "text": text}, timeout_ms=180_000)
                time.sleep(0.02)
            client.flush()

        sender = threading.Thread(target=send)
        sender.start()
        # Kill merge once answers are flowing and requests are still coming in.
        deadline = time.monotonic() + 120
        while sum(f.done() for f in list(futures.values())) < 20 and time.monotonic() < deadline:
            time.sleep(0.1)
        merge_pid = supervisor.pids()["merge-0"]
        os.killpg(merge_pid, signal.SIGKILL)
        killed_at = sum(f.done() for f in list(futures.values()))
        sender.join()
        answers = wait_all(futures, timeout_s=240)
    assert 0 < killed_at < total, "the kill must happen mid-stream"
    assert supervisor.pids()["merge-0"] != merge_pid, "merge was restarted"
    assert len(answers) == total
    wrong = {rid: a for rid, a in answers.items() if not (a.ok and a.result and len(a.result["answers"]) == 2)}
    assert not wrong, f"{len(wrong)} wrong answers, e.g. {next(iter(wrong.values()))}"
    keys = Counter(m.key().decode() for m in read_topic(settings, "answers", expect=total, timeout_s=60))
    assert sum(keys.values()) == total and set(keys) == set(futures), (
        f"duplicates: {[k for k, n in keys.items() if n > 1]}"
    )


@pytest.fixture
def no_infer_pipeline(broker: str) -> Iterator[tuple[Settings, Supervisor]]:
    """filter, split and merge, but no infer: parts are never processed."""
    settings = fresh_settings(broker)
    with running_pipeline(settings, {"filter": 1, "split": 1, "merge": 1}) as supervisor:
        yield settings, supervisor


def test_deadline_exceeded_and_partial_answers_come_at_the_deadline(
    no_infer_pipeline: tuple[Settings, Supervisor],
) -> None:
    settings, _ = no_infer_pipeline
    with Client(settings) as client:
        # Nothing will process the parts: merge answers deadline_exceeded at the deadline.
        began = now_ms()
        answer = client.ask({"task": "faq", "text": "Where is my order? Can I pay by card?"}, timeout_s=3)
        waited = now_ms() - began
        assert answer.error is not None and answer.error.code == "deadline_exceeded", answer
        assert 2500 < waited < 8000

        # Two parts expected, one arrives: a partial answer listing the missing part.
        rid = f"partial-{uuid.uuid4().hex[:6]}"
        headers = Headers(deadline_ms=int(now_ms() + 3000)).stamped("split").to_list()
        output = {
            "question": "Where is my order?",
            "entry": "track-order",
            "match": "Where is my order?",
            "answer": "Use the tracking link.",
            "score": 0.9,
            "matched": True,
        }
        producer = Producer(producer_config(settings, "test-partial"))
        future = client.watch(rid)
        producer.produce(
            settings.topic("results"),
            key=rid,
            headers=[*headers, Control.EXPECT.header()],
            value=Expect(rid, "faq", 2).encode(),
        )
        producer.produce(
            settings.topic("results"), key=rid, headers=headers, value=Result(rid, "faq", 0, 2, output).encode()
        )
        producer.flush(10)
        answer = client.wait(future, 10)
    assert answer.error is not None and answer.error.code == "partial", answer
    assert answer.error.missing == [1]
    assert answer.result is not None and answer.result["answers"][0]["entry"] == "track-order"
