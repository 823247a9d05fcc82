"""What a stage sees and what it emits, without any Kafka client in sight.

A stage's core is a plain function from input :class:`Record` s to
:class:`Output` s. The Kafka runner (``pipeline.kafka.runner``) turns polled
messages into Records and Outputs into produced messages; tests call the
functions directly with Records they build by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pipeline.errors import PipelineError, RequestError
from pipeline.messages import REQUESTED_HOP, Answer, HeaderList, Headers, recover_request_id

DEAD_LETTER_PREFIX = "pipeline-dlq-"


@dataclass(frozen=True, slots=True)
class Record:
    """One consumed message: where it came from and its raw bytes."""

    topic: str  # the declared topic name (without the cluster prefix)
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: HeaderList = field(default_factory=list)
    timestamp_ms: float | None = None

    @property
    def where(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


@dataclass(frozen=True, slots=True)
class Output:
    """One message to produce: a declared topic name, key, value and headers.

    ``value=None`` is a tombstone (compacted topics); ``partition=None`` lets
    the key choose the partition.
    """

    topic: str
    key: bytes | None
    value: bytes | None
    headers: HeaderList = field(default_factory=list)
    partition: int | None = None


Handler = Callable[[Sequence[Record]], list[Output]]
"""A stage's core as the runner calls it: a batch of records in, outputs out."""


def answer_output(answer: Answer, headers: Headers) -> Output:
    return Output("answers", answer.id.encode(), answer.with_latency(headers).encode(), headers.to_list())


def reject(record: Record, error: PipelineError, stage: str) -> list[Output]:
    """The two outputs of a bad record: an error answer and a dead-letter record.

    The answer is only possible when a request id can be recovered (from the
    value or the key); the dead letter always keeps the original key, value and
    headers, plus the reason, so it can be replayed once the cause is fixed.
    """
    headers = Headers.parse(record.headers)
    if REQUESTED_HOP not in headers.hops and record.timestamp_ms and record.timestamp_ms > 0:
        headers = headers.stamped(REQUESTED_HOP, record.timestamp_ms)
    headers = headers.stamped(stage)
    outputs: list[Output] = []
    request_id = error.request_id or recover_request_id(record.value, record.key)
    code = error.code if isinstance(error, RequestError) else "model_error"
    if request_id:
        outputs.append(answer_output(Answer.failure(request_id, code, error.message), headers))
    reasons: HeaderList = [
        (DEAD_LETTER_PREFIX + "stage", stage.encode()),
        (DEAD_LETTER_PREFIX + "code", code.encode()),
        (DEAD_LETTER_PREFIX + "reason", error.message.encode("utf-8", "replace")),
        (DEAD_LETTER_PREFIX + "source", record.where.encode()),
    ]
    outputs.append(Output("dead-letters", record.key, record.value or b"", list(record.headers) + reasons))
    return outputs
