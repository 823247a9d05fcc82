"""The whole pipeline over a real broker: four stage processes, every task, the oracle.

One pipeline (filter, split, 2×infer, merge) runs for the whole module under a
prefix of its own. Every answer is checked against the same model run in one
process on the whole input (``tests/oracle.py``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import random
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from pipeline.client import Client
from pipeline.messages import Answer
from pipeline.runtime.config import admin_config
from pipeline.settings import PROJECT_ROOT, Settings
from pipeline.tasks.faq.kb import load_eval, load_kb
from tests.integration.harness import json_value, read_topic, running_pipeline
from tests.oracle import reference_classify, reference_embed, reference_faq, reference_qa
from tests.tiny_models import build_tiny_classifier, build_tiny_qa_model

pytestmark = pytest.mark.integration

COUNTS = {"filter": 1, "split": 1, "infer": 2, "merge": 1}
WORDS = [
    "the",
    "order",
    "shipped",
    "from",
    "our",
    "warehouse",
    "in",
    "Rotterdam",
    "on",
    "Monday",
    "and",
    "the",
    "courier",
    "said",
    "it",
    "would",
    "arrive",
    "within",
    "three",
    "working",
    "days",
    "unless",
    "customs",
    "needed",
    "more",
    "paperwork",
    "for",
    "the",
    "batteries",
    "inside",
    "the",
    "parcel",
]


def long_text(words: int, seed: int) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(words)) + "."


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {"qa": build_tiny_qa_model(root / "qa"), "classify": build_tiny_classifier(root / "classify")}


@pytest.fixture(scope="module")
def settings(broker: str, models: dict[str, Path]) -> Settings:
    return Settings.from_env(
        bootstrap_servers=broker,
        prefix=f"it{uuid.uuid4().hex[:8]}-",
        qa_model=str(models["qa"]),
        classify_model=str(models["classify"]),
    )


@pytest.fixture(scope="module")
def pipeline(settings: Settings) -> Iterator[Settings]:
    with running_pipeline(settings, COUNTS):
        yield settings


@pytest.fixture(scope="module")
def client(pipeline: Settings) -> Iterator[Client]:
    with Client(pipeline) as client:
        yield client


def test_qa_spans_equal_the_in_process_model(client: Client, settings: Settings, models: dict[str, Path]) -> None:
    for seed in range(3):
        context = long_text(900, seed)  # ~1,000 tokens: several 384-token windows
        question = "When will the parcel arrive?"
        answer = client.ask({"task": "qa", "question": question, "context": context}, timeout_s=60)
        assert answer.ok, answer.error
        expected = reference_qa(models["qa"], question, context, settings)
        assert answer.result is not None
        assert (answer.result["start"], answer.result["end"]) == (expected["start"], expected["end"])
        assert answer.result["answer"] == expected["answer"] == context[expected["start"] : expected["end"]]
        assert answer.result["score"] == pytest.approx(expected["score"], abs=1e-4)


def test_classify_labels_equal_the_in_process_model(
    client: Client, settings: Settings, models: dict[str, Path]
) -> None:
    for seed in range(3):
        text = long_text(700, 10 + seed)  # several 256-token chunks
        answer = client.ask({"task": "classify", "text": text}, timeout_s=60)
        assert answer.ok and answer.result is not None, answer.error
        expected = reference_classify(models["classify"], text, settings)
        assert answer.result["label"] == expected["label"]
        for label, p in expected["probabilities"].items():
            assert answer.result["probabilities"][label] == pytest.approx(p, abs=1e-4)


def test_embeddings_equal_the_in_process_model(client: Client, settings: Settings) -> None:
    for text in ("How do I reset my password?", long_text(600, 20)):
        answer = client.ask({"task": "embed", "text": text}, timeout_s=60)
        assert answer.ok and answer.result is not None, answer.error
        got = np.asarray(answer.result["embedding"], dtype=np.float64)
        expected = np.asarray(reference_embed(Path(settings.models.embed_model), text, settings), dtype=np.float64)
        cosine = float(got @ expected / (np.linalg.norm(got) * np.linalg.norm(expected)))
        assert cosine > 1 - 1e-5


def test_faq_answers_each_sub_question_in_order(client: Client, settings: Settings) -> None:
    message = "How do I reset my password? And can I change my delivery address? 我怎么退货？"
    # Han characters would route the message to the Chinese pair; "lang" keeps it on MiniLM.
    answer = client.ask({"task": "faq", "text": message, "lang": "en"}, timeout_s=60)
    assert answer.ok and answer.result is not None, answer.error
    entries = [a["entry"] for a in answer.result["answers"]]
    assert entries == reference_faq(Path(settings.models.embed_model), settings.faq.faq_kb, message, settings)
    assert len(entries) == 3 and entries[0] == "reset-password"
    assert [a["question"] for a in answer.result["answers"]][:2] == [
        "How do I reset my password?",
        "Can I change my delivery address?",  # its lead-in "And" dropped by split
    ]
    assert answer.result["reply"]
    assert set(answer.latency_ms) >= {"filter", "split", "infer", "merge", "client"}


def test_a_chinese_message_is_answered_from_the_chinese_kb(client: Client, settings: Settings) -> None:
    answers = {entry.id: entry.answer for entry in load_kb(settings.faq.faq_multilingual_kb)}
    answer = client.ask({"task": "faq", "text": "我的快递到哪了？还有，退款多久能到账？"}, timeout_s=60)
    assert answer.ok and answer.result is not None, answer.error
    got = [(a["entry"], a["answer"]) for a in answer.result["answers"]]
    assert got == [("track-order", answers["track-order"]), ("refund-status", answers["refund-status"])]


BAD_INPUTS: list[tuple[str, bytes, str]] = [
    ("bad-json", b'{"id": "bad-json", "task": "faq", "text": ', "invalid_request"),
    ("bad-utf8", b'{"id": "bad-utf8", "task": "faq", "text": "\xff\xfe"}', "invalid_request"),
    ("bad-missing", b'{"id": "bad-missing", "task": "qa", "question": "who?"}', "invalid_request"),
    ("bad-type", b'{"id": "bad-type", "task": "faq", "text": ["a"]}', "invalid_request"),
    ("bad-task", b'{"id": "bad-task", "task": "translate", "text": "hi"}', "invalid_request"),
    ("bad-empty", b'{"id": "bad-empty", "task": "embed", "text": "   "}', "invalid_request"),
    ("bad-large", orjson.dumps({"id": "bad-large", "task": "embed", "text": "word " * 30_000}), "too_large"),
    ("bad-late", b'{"id": "bad-late", "task": "faq", "text": "hi?", "deadline_ms": 1000}', "deadline_exceeded"),
]


def test_bad_input_is_answered_dead_lettered_and_good_requests_still_flow(client: Client, settings: Settings) -> None:
    suffix = uuid.uuid4().hex[:6]
    futures = {}
    for rid, value, _ in BAD_INPUTS:
        key = f"{rid}-{suffix}"
        futures[rid] = client.send_raw(key, value.replace(rid.encode(), key.encode()))
    client.flush()
    for rid, _, code in BAD_INPUTS:
        answer = client.wait(futures[rid], 30)
        assert answer.status == "error" and answer.error is not None
        assert answer.error.code == code, (rid, answer.error)
        assert answer.error.message
    dead = read_topic(settings, "dead-letters", expect=len(BAD_INPUTS), timeout_s=30)
    by_key = {m.key().decode(): m for m in dead}
    for rid, value, code in BAD_INPUTS:
        record = by_key[f"{rid}-{suffix}"]
        assert record.value() == value.replace(rid.encode(), f"{rid}-{suffix}".encode())
        headers = dict(record.headers())
        assert headers["pipeline-dlq-code"] == code.encode() and headers["pipeline-dlq-reason"]
    ok = client.ask({"task": "faq", "text": "Do you ship to Canada?"}, timeout_s=30)
    assert ok.ok


def test_plain_confluent_kafka_is_enough_to_use_the_pipeline(pipeline: Settings) -> None:
    """No pipeline package on the client side: raw producer, raw consumer, JSON."""
    settings = pipeline
    answers = settings.topic("answers")
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "group.id": f"plain-{uuid.uuid4()}",
            "auto.offset.reset": "latest",
            "isolation.level": "read_committed",
        }
    )
    partitions = consumer.list_topics(answers, timeout=10).topics[answers].partitions
    ends = [
        TopicPartition(answers, p, consumer.get_watermark_offsets(TopicPartition(answers, p))[1]) for p in partitions
    ]
    consumer.assign(ends)
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers})
    request_id = f"plain-{uuid.uuid4().hex}"
    request = {"id": request_id, "task": "faq", "text": "How long does a refund take?"}
    producer.produce(settings.topic("requests"), key=request_id, value=orjson.dumps(request))
    producer.flush(10)
    deadline = time.monotonic() + 60
    answer = None
    while time.monotonic() < deadline and answer is None:
        message = consumer.poll(0.2)
        if message is not None and message.error() is None and message.key() == request_id.encode():
            answer = json_value(message)
    consumer.close()
    assert answer is not None and answer["status"] == "ok" and answer["id"] == request_id
    assert answer["result"]["answers"][0]["entry"]


def test_a_thousand_mixed_requests_get_a_thousand_matching_answers(client: Client, settings: Settings) -> None:
    rng = random.Random(7)
    kb = load_kb(settings.faq.faq_kb)
    requests: dict[str, dict[str, object]] = {}
    for i in range(1000):
        kind = rng.choice(("faq", "faq", "embed", "classify", "qa", "bad"))
        rid = f"mix-{i}-{uuid.uuid4().hex[:6]}"
        if kind == "faq":
            entry = rng.choice(kb)
            requests[rid] = {"task": "faq", "text": entry.questions[0]}
        elif kind == "embed":
            requests[rid] = {"task": "embed", "text": long_text(rng.randint(5, 40), i)}
        elif kind == "classify":
            requests[rid] = {"task": "classify", "text": long_text(rng.randint(5, 300), i)}
        elif kind == "qa":
            requests[rid] = {
                "task": "qa",
                "question": "Where did it ship from?",
                "context": long_text(rng.randint(20, 500), i),
            }
        else:
            requests[rid] = {"task": "faq", "text": ""}  # empty after normalising: invalid_request
    began = time.monotonic()
    futures = {rid: client.send(dict(body, id=rid), timeout_ms=180_000) for rid, body in requests.items()}
    client.flush()
    concurrent.futures.wait(futures.values(), timeout=200)
    answers: dict[str, Answer] = {rid: f.result() for rid, f in futures.items() if f.done()}
    missing = [requests[rid]["task"] for rid in futures if rid not in answers]
    assert not missing, f"{len(missing)} unanswered after {time.monotonic() - began:.0f} s: {Counter(missing)}"
    print(f"1,000 mixed requests answered in {time.monotonic() - began:.1f} s")
    for rid, body in requests.items():
        answer = answers[rid]
        assert answer.id == rid
        if body.get("text") == "":
            assert answer.error is not None and answer.error.code == "invalid_request"
        else:
            assert answer.ok, (rid, answer.error)
            assert answer.task == body["task"]
    # Exactly one answer each on the topic itself (duplicates would show up here).
    prefix = "mix-"
    on_topic = [m.key().decode() for m in read_topic(settings, "answers", expect=10_000, timeout_s=20)]
    mixed = [k for k in on_topic if k.startswith(prefix)]
    assert len(mixed) == len(set(mixed)) == 1000


def test_the_client_awaits_answers_with_asyncio(client: Client) -> None:
    async def ask_many() -> list[Answer]:
        questions = ["Do you ship to Canada?", "How do I reset my password?", "Can I pay with a gift card?"]
        return await asyncio.gather(*(client.ask_async({"task": "faq", "text": q}, timeout_s=60) for q in questions))

    answers = asyncio.run(ask_many())
    assert [a.result["answers"][0]["entry"] for a in answers if a.result][:2] == [
        "international-shipping",
        "reset-password",
    ]
    assert all(a.ok for a in answers)


def test_two_infer_members_share_the_partitions(pipeline: Settings) -> None:
    admin = AdminClient(admin_config(pipeline))
    group = pipeline.group("infer")
    deadline = time.monotonic() + 60
    assignments: list[int] = []
    while time.monotonic() < deadline:  # a rebalance in progress settles within seconds
        description = admin.describe_consumer_groups([group])[group].result()
        assignments = [len(m.assignment.topic_partitions) for m in description.members]
        if len(assignments) == 2 and all(a > 0 for a in assignments) and sum(assignments) == 12:
            break
        time.sleep(1)
    assert len(assignments) == 2 and all(a > 0 for a in assignments), assignments
    assert sum(assignments) == 12


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True, timeout=300, cwd=PROJECT_ROOT
    )


def test_pipeline_ask_prints_the_answer_and_its_latency(pipeline: Settings) -> None:
    done = run_cli(
        "ask",
        "--prefix",
        pipeline.kafka.prefix,
        "--bootstrap-servers",
        pipeline.kafka.bootstrap_servers,
        "--task",
        "faq",
        "--text",
        "How do I reset my password? Can I pay with PayPal?",
    )
    assert done.returncode == 0, done.stderr
    assert "reset-password" in done.stdout and "⏱" in done.stdout and "merge" in done.stdout


def test_pipeline_eval_reports_faq_accuracy(pipeline: Settings) -> None:
    done = run_cli("eval", "--prefix", pipeline.kafka.prefix, "--bootstrap-servers", pipeline.kafka.bootstrap_servers)
    assert done.returncode == 0, done.stdout + done.stderr
    line = next(line for line in done.stdout.splitlines() if "top-1 accuracy" in line)
    hits, total = line.split(": ")[1].split(" = ")[0].split("/")
    assert int(total) == len(load_eval(PROJECT_ROOT / "pipeline" / "data" / "faq_eval.json"))
    assert int(hits) / int(total) >= 0.9, done.stdout
