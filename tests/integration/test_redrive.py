"""`pipeline redrive` over a real pipeline: a fixed cause is retried, each replay answered once."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter

import orjson
import pytest
from confluent_kafka import Producer

from pipeline.runtime.config import producer_config
from pipeline.settings import PROJECT_ROOT, Settings
from pipeline.tools.bench.loadgen import AnswerReader, read_all
from tests.integration.harness import ALL_STAGES, running_pipeline

pytestmark = pytest.mark.integration


def redrive(settings: Settings, *args: str) -> str:
    env = dict(
        os.environ, PIPELINE_BOOTSTRAP_SERVERS=settings.kafka.bootstrap_servers, PIPELINE_PREFIX=settings.kafka.prefix
    )
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "redrive", *args],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_redrive_replays_requests_once_and_skips_parts(settings: Settings) -> None:
    with running_pipeline(settings, dict.fromkeys(ALL_STAGES, 1)):
        reader = AnswerReader(settings, from_beginning=True)
        producer = Producer(producer_config(settings, "redrive-test"))
        late = [f"{settings.kafka.prefix}late{i}" for i in range(5)]
        broken = [f"{settings.kafka.prefix}broken{i}" for i in range(2)]
        for rid in late:  # a deadline long gone: answered deadline_exceeded, fixed by a fresh one
            body = {"id": rid, "task": "faq", "text": "Where is my order?", "deadline_ms": 1000}
            producer.produce(settings.topic("requests"), key=rid.encode(), value=orjson.dumps(body))
        for rid in broken:
            producer.produce(settings.topic("requests"), key=rid.encode(), value=b'{"id": "cut')
        producer.produce(settings.topic("parts"), key=b"nobody#0", value=b"not a part")
        assert producer.flush(30) == 0
        assert reader.wait_for(lambda a: len(a) >= 7, 60), reader.snapshot()
        deadline = time.monotonic() + 60
        while len(read_all(settings, "dead-letters")) < 8 and time.monotonic() < deadline:
            time.sleep(1)

        dry = redrive(settings, "--code", "deadline_exceeded", "--dry-run")
        assert dry.count("-> replay") == 5 and "would replay 5" in dry, dry
        skipped = redrive(settings, "--stage", "infer", "--dry-run")
        assert "skip: holds a parts record" in skipped and "would replay 0" in skipped, skipped
        assert "would replay 0" in redrive(settings, "--code", "deadline_exceeded", "--until", "1d", "--dry-run")

        time.sleep(2)
        assert len(reader.snapshot()) == 7  # a dry run sends nothing
        out = redrive(settings, "--code", "deadline_exceeded", "--since", "10m")
        assert "replayed 5" in out, out
        assert reader.wait_for(lambda a: len(a) >= 12, 60), reader.snapshot()
        time.sleep(3)  # room for a duplicate to show
        arrivals = reader.snapshot()
        reader.close()
    per_id = Counter(a.id for a in arrivals)
    assert all(per_id[rid] == 2 for rid in late), per_id  # the original error and one replay
    assert all(per_id[rid] == 1 for rid in broken), per_id
    replayed = {a.id: a for a in arrivals[7:]}
    assert sorted(replayed) == sorted(late)
    assert all(a.status == "ok" for a in replayed.values()), replayed
