"""Run the real pipeline (one process per stage member) against the test broker.

Each test module gets its own topic prefix, so its pipeline, topics, consumer
groups and merge state are its own.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
from confluent_kafka import Consumer, TopicPartition

from pipeline.errors import PipelineError
from pipeline.local.cluster import prepare, wait_ready
from pipeline.local.supervisor import Supervisor
from pipeline.operations.admin import delete_prefixed
from pipeline.runtime.config import consumer_config
from pipeline.settings import PROJECT_ROOT, Settings

ALL_STAGES = ("filter", "split", "infer", "merge")


LOG_ROOT = PROJECT_ROOT / ".cache" / "test-logs"


@contextmanager
def running_pipeline(settings: Settings, counts: dict[str, int], **overrides: Any) -> Iterator[Supervisor]:
    """The stages as processes, logging to .cache/test-logs/<prefix>/ (kept for post-mortems).

    ``overrides`` are Settings fields the members get on top of ``settings``.
    """
    log_dir = LOG_ROOT / settings.kafka.prefix.rstrip("-")
    prepare(settings, say=lambda *_: None)
    supervisor = Supervisor(counts, settings.replace(**overrides), log_dir)
    supervisor.start()
    try:
        if not wait_ready(settings, counts, threading.Event(), timeout_s=240, on_wait=supervisor.check):
            logs = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(log_dir.glob("*.log")))
            raise AssertionError(f"pipeline {settings.kafka.prefix} did not come up:\n{logs}")
        # Like `pipeline up`: a member that exits is restarted while tests run.
        watching = threading.Event()
        watcher = threading.Thread(target=_watch, args=(supervisor, watching), daemon=True)
        watcher.start()
        try:
            yield supervisor
        finally:
            watching.set()
            watcher.join(5)
    finally:
        supervisor.stop()
        try:
            delete_prefixed(settings)
        except PipelineError as exc:  # a leftover never fails the test that made it
            warnings.warn(f"could not clean up prefix {settings.kafka.prefix}: {exc}", stacklevel=1)


def _watch(supervisor: Supervisor, stop: threading.Event) -> None:
    while not stop.wait(0.5):
        supervisor.check()


def read_topic(settings: Settings, name: str, *, expect: int, timeout_s: float = 60.0) -> list[Any]:
    """Every committed record of a declared topic, from the beginning, until ``expect`` arrived."""
    topic = settings.topic(name)
    consumer = Consumer(consumer_config(settings, f"{settings.kafka.prefix}reader-{time.time_ns()}", "test-reader"))
    metadata = consumer.list_topics(topic, timeout=10)
    consumer.assign([TopicPartition(topic, p, 0) for p in metadata.topics[topic].partitions])
    records: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and len(records) < expect:
            message = consumer.poll(0.2)
            if message is not None and message.error() is None:
                records.append(message)
        # Keep reading briefly: more than expected means duplicates.
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            message = consumer.poll(0.2)
            if message is not None and message.error() is None:
                records.append(message)
    finally:
        consumer.close()
    return records


def json_value(message: Any) -> dict[str, Any]:
    value = orjson.loads(message.value())
    assert isinstance(value, dict)
    return value
