"""``pipeline replay``: yesterday's requests through a candidate pipeline, compared with what was answered.

1. Read the recorded ``requests`` of a time range (each partition from the
   offset of the range's first timestamp, ``offsets_for_times``, up to its
   last), and the live ``answers`` from the same time on, by request id.
   Both reads assign partitions without a consumer group: nothing is
   committed, no live group moves.
2. Start a candidate pipeline (one member per stage, as ``pipeline up``
   starts them) under its own prefix, ``<prefix>replay-<id>-``, so its
   topics, consumer groups, transactional ids, merge state, sessions and
   answer cache are its own, with the changed settings (``--set
   PIPELINE_FAQ_MIN_SCORE=0.5``). Nothing it writes reaches a live topic.
3. Produce the recorded requests to the candidate's ``requests`` with their
   keys and values, a fresh deadline of the same budget and a fresh request
   time (the recorded ones are hours old: filter would drop them as late),
   at the recorded pace times ``speed`` (0: as fast as it takes them).
4. Read the candidate's answers, stop it, delete its topics and groups, and
   compare (:mod:`pipeline.tools.replay.compare`).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from confluent_kafka import Consumer, TopicPartition

from pipeline.errors import BrokerError, ConfigError, DecodeError
from pipeline.messages import DEADLINE_HEADER, HOP_PREFIX, Answer, HeaderList, Headers, Request, header_list
from pipeline.runtime.config import load_consumer_config
from pipeline.settings import Settings
from pipeline.tools.bench.loadgen import AnswerReader, RawRecord, Sender
from pipeline.tools.replay.compare import Comparison, compare

STAGES = ("filter", "split", "infer", "merge")


@dataclass(frozen=True)
class Recorded:
    """A recorded request as it was produced: its record, its request (None: undecodable) and its time budget."""

    record: RawRecord
    request: Request | None
    budget_ms: float | None  # deadline minus produce time, when it had one


def candidate_settings(settings: Settings, changes: Mapping[str, str], run_id: str) -> Settings:
    """The live settings with ``changes`` (``PIPELINE_*`` names or field names) under a prefix of its own."""
    env = settings.to_env(secrets=True)
    for name, value in changes.items():
        key = name if name.startswith("PIPELINE_") else "PIPELINE_" + name.upper()
        if key in ("PIPELINE_PREFIX", "PIPELINE_BOOTSTRAP_SERVERS"):
            raise ConfigError(f"{key}: the candidate runs on the live cluster under a prefix of its own")
        env[key] = value
    env["PIPELINE_PREFIX"] = f"{settings.kafka.prefix}replay-{run_id}-"
    env["PIPELINE_METRICS_PORT"] = "0"  # its members must not take the live members' ports
    return Settings.from_env(env)


def read_range(
    settings: Settings,
    topic: str,
    since_ms: int,
    until_ms: int | None,
    keep: Callable[[RawRecord], bool] | None = None,
    timeout_s: float = 60.0,
) -> list[RawRecord]:
    """Committed records of declared ``topic`` with timestamps in [since_ms, until_ms), in timestamp order."""
    name = settings.topic(topic)
    client_id = f"{settings.kafka.prefix}replay-reader-{uuid.uuid4().hex[:6]}"
    consumer = Consumer(load_consumer_config(settings, f"{client_id}-unused", client_id))
    try:
        metadata = consumer.list_topics(name, timeout=10)
        if name not in metadata.topics or metadata.topics[name].error is not None:
            raise BrokerError(f"topic {name} not found at {settings.kafka.bootstrap_servers}")
        partitions = list(metadata.topics[name].partitions)
        firsts = consumer.offsets_for_times([TopicPartition(name, p, since_ms) for p in partitions], timeout=10)
        starts, ends = [], {}
        for tp in firsts:
            _, high = consumer.get_watermark_offsets(TopicPartition(name, tp.partition), timeout=10, cached=False)
            if tp.offset >= 0 and tp.offset < high:  # -1: no record at or after since_ms
                starts.append(TopicPartition(name, tp.partition, tp.offset))
                ends[tp.partition] = high
        records: list[RawRecord] = []
        consumer.assign(starts)
        deadline = time.monotonic() + timeout_s
        while ends and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=500, timeout=0.5):
                if message.error() is not None:
                    continue
                partition, offset = int(message.partition() or 0), int(message.offset() or 0)
                if offset + 1 >= ends.get(partition, 0):
                    ends.pop(partition, None)
                stamp = message.timestamp()[1]
                if stamp < since_ms or (until_ms is not None and stamp >= until_ms):
                    continue
                record = RawRecord(partition, offset, message.key(), message.value(),
                                   header_list(message.headers()), stamp)  # fmt: skip
                if keep is None or keep(record):
                    records.append(record)
            # read_committed stops short of a transaction marker at the end: a position there is the end.
            for tp in consumer.position([TopicPartition(name, p) for p in list(ends)]):
                if tp.offset >= 0 and tp.offset + 1 >= ends.get(tp.partition, 0):
                    ends.pop(tp.partition, None)
        return sorted(records, key=lambda r: (r.timestamp_ms, r.partition, r.offset))
    finally:
        consumer.close()


def recorded_requests(settings: Settings, since_ms: int, until_ms: int | None, limit: int | None) -> list[Recorded]:
    out = []
    for record in read_range(settings, "requests", since_ms, until_ms):
        try:
            request: Request | None = Request.decode(record.value)
        except DecodeError:
            request = None
        deadline = next((float(v) for k, v in record.headers if k == DEADLINE_HEADER), None)
        if request is not None and request.deadline_ms:
            deadline = float(request.deadline_ms)
        out.append(Recorded(record, request, None if deadline is None else deadline - record.timestamp_ms))
    return out[:limit] if limit else out


def recorded_answers(settings: Settings, ids: set[str], since_ms: int) -> tuple[dict[str, Answer], dict[str, float]]:
    """The answers to ``ids`` read from ``since_ms`` on (the first to each id), and what each cost (CPU + model
    ms, from its ``pipeline-cost-*`` headers) where it says."""
    found: dict[str, Answer] = {}
    costs: dict[str, float] = {}

    def keep(record: RawRecord) -> bool:
        key = (record.key or b"").decode(errors="replace")
        if key not in ids or key in found:
            return False
        try:
            found[key] = Answer.decode(record.value)
        except DecodeError:
            return False
        charged = Headers.parse(record.headers).costs
        if charged:
            costs[key] = round(sum(charged.values()), 3)
        return False  # kept in found, not in the list

    read_range(settings, "answers", since_ms, None, keep)
    return found, costs


def fresh(recorded: Recorded, now_ms: float, default_timeout_ms: int) -> tuple[bytes | None, HeaderList]:
    """The value and headers to replay: the same budget from now, no hop times from the recorded run."""
    budget = recorded.budget_ms if recorded.budget_ms and recorded.budget_ms > 0 else default_timeout_ms
    deadline = int(now_ms + budget)
    value = recorded.record.value
    if recorded.request is not None and recorded.request.deadline_ms:
        value = msgspec.structs.replace(recorded.request, deadline_ms=deadline).encode()
    headers = [(k, v) for k, v in recorded.record.headers if k != DEADLINE_HEADER and not k.startswith(HOP_PREFIX)]
    return value, [*headers, (DEADLINE_HEADER, str(deadline).encode())]


@dataclass
class Replay:
    comparison: Comparison
    candidate_prefix: str
    replayed: int
    seconds: float


def replay(
    settings: Settings,
    changes: Mapping[str, str],
    since_ms: int,
    until_ms: int | None = None,
    *,
    limit: int | None = None,
    speed: float = 0.0,
    generate: int = 0,
    timeout_s: float = 300.0,
    log_dir: Path | None = None,
    say: Callable[[str], Any] = print,
) -> Replay:
    """Replay the range through a candidate with ``changes``; compare with the recorded answers."""
    from pipeline.local.cluster import prepare, wait_ready
    from pipeline.local.supervisor import Supervisor
    from pipeline.operations.admin import delete_prefixed

    began = time.monotonic()
    recorded = recorded_requests(settings, since_ms, until_ms, limit)
    if not recorded:
        raise ConfigError(f"no requests in {settings.topic('requests')} in that time range")
    ids = {(r.record.key or b"").decode(errors="replace") for r in recorded}
    answers, answer_costs = recorded_answers(settings, ids, since_ms)
    say(f"replay: {len(recorded)} recorded requests, {len(answers)} recorded answers")
    run_id = uuid.uuid4().hex[:8]
    candidate = candidate_settings(settings, changes, run_id)
    counts = {stage: 1 for stage in STAGES}
    if generate:
        counts["generate"] = generate
    logs = log_dir or Path(".cache") / "logs" / f"replay-{run_id}"
    prepare(candidate, say=lambda line: say(f"replay: {line}"))
    supervisor = Supervisor(counts, candidate, logs)
    supervisor.start()
    try:
        if not wait_ready(candidate, counts, threading.Event(), timeout_s=240, on_wait=supervisor.check):
            raise BrokerError(f"the candidate pipeline {candidate.kafka.prefix} did not come up; its logs: {logs}")
        reader = AnswerReader(candidate, from_beginning=True)
        sender = Sender(candidate)
        try:
            start, first = time.monotonic(), recorded[0].record.timestamp_ms
            for item in recorded:
                if speed > 0:  # the recorded pace, sped up
                    wait = (item.record.timestamp_ms - first) / 1000 / speed - (time.monotonic() - start)
                    if wait > 0:
                        time.sleep(wait)
                value, headers = fresh(item, time.time() * 1000, candidate.filter.default_timeout_ms)
                key = item.record.key
                sender.send((key or b"").decode(errors="replace"), value, key=key, headers=headers,
                            key_is_ident=False)  # fmt: skip
            sender.flush(30)
            expected = len(ids)
            reader.wait_for(lambda arrived: len({a.id for a in arrived}) >= expected, timeout_s)
        finally:
            reader.close()
        candidate_answers, candidate_costs = recorded_answers(candidate, ids, 0)
    finally:
        supervisor.stop()
        delete_prefixed(candidate)
    requests = {(r.record.key or b"").decode(errors="replace"): r.request for r in recorded}
    comparison = compare(requests, answers, candidate_answers, costs=(answer_costs, candidate_costs))
    return Replay(comparison, candidate.kafka.prefix, len(recorded), time.monotonic() - began)
