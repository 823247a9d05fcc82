"""pipeline replay against the real broker: recorded faq traffic through a candidate with a higher threshold.

A live pipeline answers 300 recorded faq messages; ``pipeline replay`` then
sends them through a candidate with ``PIPELINE_FAQ_MIN_SCORE`` raised, under
its own prefix. The candidate must give more fallbacks (fewer sub-questions
matched), the live answers must stay as they were, and the gate must close
(exit 3) at a 5-point margin and open (exit 0) at a wide one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import orjson
from confluent_kafka import Producer

from pipeline.messages import Headers, Request
from pipeline.runtime.config import producer_config
from pipeline.settings import PROJECT_ROOT, Settings
from pipeline.topics import TopicSpec
from tests.integration.harness import json_value, read_topic, running_pipeline

REQUESTS = 300
COUNTS = {"filter": 1, "split": 1, "infer": 1, "merge": 1}


def messages() -> list[str]:
    data = PROJECT_ROOT / "pipeline" / "data"
    items = [*json.loads((data / "faq_eval.json").read_text())["items"],
             *json.loads((data / "faq_eval_heldout.json").read_text())["items"]]  # fmt: skip
    return [str(item["question"]) for item in items]


def replay(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **settings.to_env(), "PYTHONPATH": str(PROJECT_ROOT)}
    return subprocess.run([sys.executable, "-m", "pipeline.cli", "replay", *args], env=env, capture_output=True,
                          text=True, timeout=400, cwd=PROJECT_ROOT)  # fmt: skip


def test_a_higher_faq_threshold_replayed_gives_more_fallbacks_and_the_gate_closes_and_opens(
    settings: Settings, topics: dict[str, TopicSpec], tmp_path: Path
) -> None:
    texts = messages()
    with running_pipeline(settings, COUNTS):
        producer = Producer(producer_config(settings, "replay-test"))
        ids = []
        for i in range(REQUESTS):
            rid = f"r{i}-{uuid.uuid4().hex[:6]}"
            ids.append(rid)
            request = Request(id=rid, task="faq", text=texts[i % len(texts)])
            producer.produce(topics["requests"].topic, key=rid, value=request.encode())
            producer.poll(0)
        assert producer.flush(30) == 0
        messages_ = read_topic(settings, "answers", expect=REQUESTS, timeout_s=120)
        recorded = {a["id"]: a for a in map(json_value, messages_)}
        assert len(recorded) == REQUESTS and all(a["status"] == "ok" for a in recorded.values())
        # Every answer says what it cost: each stage's CPU share and the model's, in its headers.
        costs = [Headers.parse(m.headers()).costs for m in messages_ if not recorded[json_value(m)["id"]].get("cached")]
        assert costs and all(set(c) == {"filter", "split", "infer", "model", "merge"} for c in costs), costs[:3]
        assert all(c["model"] > 0 for c in costs)

        report = tmp_path / "replay.json"
        worse = replay(settings, "--since", "10m", "--set", "PIPELINE_FAQ_MIN_SCORE=0.6", "--speed", "0",
                       "--margin", "0.05", "--json", str(report), "--timeout", "120")  # fmt: skip
        assert worse.returncode == 3, worse.stdout + worse.stderr[-3000:]
        data = json.loads(report.read_text())
        assert data["both"] == REQUESTS and data["missing_candidate"] == 0, data
        old, new = data["recorded"], data["candidate"]
        assert new["matched"] < old["matched"] - 0.05, "a higher threshold: more sub-questions get the fallback"
        assert new["errors"] == old["errors"] == 0 and data["agreement"] < 1
        assert old["cost_ms_per_answer"] > 0 and new["cost_ms_per_answer"] > 0
        assert data["changed"] and any(None in e["candidate"]["says"] for e in data["changed"])
        assert "worse: matched:" in worse.stdout and "same entry / span / label" in worse.stdout

        # The live answers are untouched: still exactly one per request, nothing from the candidate.
        again = [json_value(m) for m in read_topic(settings, "answers", expect=REQUESTS + 1, timeout_s=5)]
        assert sorted(a["id"] for a in again) == sorted(ids)
        # The candidate cleaned up after itself: no replay topics left on the cluster.
        left = producer.list_topics(timeout=10).topics
        assert not [t for t in left if t.startswith(f"{settings.kafka.prefix}replay-")], sorted(left)

    wide = replay(settings, "--from-json", str(report), "--margin", "0.9")
    assert wide.returncode == 0 and "candidate within the margins" in wide.stdout, wide.stdout + wide.stderr
    narrow = replay(settings, "--from-json", str(report), "--margin", "0.05")
    assert narrow.returncode == 3, narrow.stdout
    print(worse.stdout)
    print(orjson.dumps(data["changed"][:2]).decode())
