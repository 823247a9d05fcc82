"""Replay dead letters to ``requests`` once their cause is fixed (``pipeline redrive``).

A dead letter (see :func:`pipeline.stages.base.reject`) keeps the original
key, value and headers plus ``pipeline-dlq-stage``, ``-code``, ``-reason``
and ``-source`` (``topic[partition]@offset``). What can be replayed depends
on where it came from:

* from ``requests`` (filter) or ``filtered`` (split): the record *is* a
  request. It goes back to ``requests`` with its key and bytes, so filter
  checks it again and the request's id gets one new answer. Its old deadline
  has passed by now, so the replay gets a fresh one (``timeout_ms`` from
  now): in the ``deadline_ms`` field when the value is a JSON object that has
  one, and in the ``pipeline-deadline-ms`` header. The reason headers and old
  hop times are dropped; ``pipeline-redrive-of`` says which dead letter it was.
* from ``parts`` (infer) or ``results`` (merge): the record is a part or a
  result, not a request, and its request was already answered by merge (at
  the latest at its deadline, ``partial`` or ``deadline_exceeded``). Sending
  a part to ``requests`` would only be rejected again, so these are listed
  and skipped: the client re-sends the request itself.

Selection is by stage, code and the time the record was dead-lettered.
Redrive does not remember what it replayed: run it over a time window (or a
code) that a fix covers, and use ``--dry-run`` first.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import orjson
from confluent_kafka import KafkaError, Message, Producer

from pipeline.errors import BrokerError
from pipeline.messages import DEADLINE_HEADER, HOP_PREFIX, DeadLetterReason, HeaderList, kafka_headers
from pipeline.runtime.config import producer_config
from pipeline.settings import Settings
from pipeline.tools.bench.loadgen import RawRecord, read_all

REDRIVE_HEADER = "pipeline-redrive-of"
REPLAYABLE = ("requests", "filtered")


@dataclass(frozen=True, slots=True)
class DeadLetter:
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes
    headers: HeaderList  # the original headers, without the reason
    stage: str
    code: str
    reason: str
    source: str  # topic[partition]@offset it was read from

    @property
    def source_topic(self) -> str:
        return self.source.split("[", 1)[0]

    @property
    def where(self) -> str:
        return f"dead-letters[{self.partition}]@{self.offset}"

    @property
    def replayable(self) -> bool:
        return self.source_topic in REPLAYABLE

    @property
    def skip_reason(self) -> str | None:
        if self.replayable:
            return None
        return f"holds a {self.source_topic} record, not a request; its request was answered by merge"

    @classmethod
    def parse(cls, record: RawRecord) -> DeadLetter:
        reason = DeadLetterReason.parse(record.headers) or DeadLetterReason("?", "?", "", "?")
        original = DeadLetterReason.strip(record.headers)
        return cls(
            record.partition,
            record.offset,
            record.timestamp_ms,
            record.key,
            record.value or b"",
            original,
            reason.stage,
            reason.code,
            reason.reason,
            reason.source or "?",
        )


def select(
    letters: Iterable[DeadLetter],
    *,
    stages: Iterable[str] = (),
    codes: Iterable[str] = (),
    since_ms: int | None = None,
    until_ms: int | None = None,
) -> list[DeadLetter]:
    """The dead letters that match every given filter."""
    stage_set, code_set = set(stages), set(codes)
    return [
        d
        for d in letters
        if (not stage_set or d.stage in stage_set)
        and (not code_set or d.code in code_set)
        and (since_ms is None or d.timestamp_ms >= since_ms)
        and (until_ms is None or d.timestamp_ms < until_ms)
    ]


def replay_record(letter: DeadLetter, now_ms: int, timeout_ms: int) -> tuple[bytes | None, bytes, HeaderList]:
    """Key, value and headers to send to ``requests`` for a replayable dead letter."""
    deadline = now_ms + timeout_ms
    value = letter.value
    try:
        body = orjson.loads(value)
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, dict) and "deadline_ms" in body:
        body["deadline_ms"] = deadline
        value = orjson.dumps(body)
    headers = [(k, v) for k, v in letter.headers if k != DEADLINE_HEADER and not k.startswith(HOP_PREFIX)]
    headers += [(DEADLINE_HEADER, str(deadline).encode()), (REDRIVE_HEADER, letter.where.encode())]
    return letter.key, value, headers


def load_dead_letters(settings: Settings) -> list[DeadLetter]:
    return [DeadLetter.parse(r) for r in read_all(settings, "dead-letters")]


def redrive(settings: Settings, letters: Iterable[DeadLetter], *, timeout_ms: int) -> int:
    """Send every replayable letter to ``requests``; how many were acknowledged."""
    producer = Producer(producer_config(settings, f"{settings.kafka.prefix}pipeline-redrive"))
    errors: list[str] = []
    acked = 0

    def delivered(error: KafkaError | None, _message: Message) -> None:
        nonlocal acked
        if error is None:
            acked += 1
        else:
            errors.append(error.str())

    now = int(time.time() * 1000)
    for letter in letters:
        if not letter.replayable:
            continue
        key, value, headers = replay_record(letter, now, timeout_ms)
        producer.produce(
            settings.topic("requests"), key=key, value=value, headers=kafka_headers(headers), on_delivery=delivered
        )
        producer.poll(0)
    left = producer.flush(60)
    if left or errors:
        raise BrokerError(f"redrive: {left} records unsent, errors: {errors[:3]} ({acked} were replayed)")
    return acked
