"""How every stage answers, and its one policy for a record it cannot use.

The wire contract itself is :mod:`pipeline.records`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from pipeline.errors import PipelineError, RequestError
from pipeline.messages import REQUESTED_HOP, Answer, DeadLetterReason, Headers, recover_request_id
from pipeline.records import Output, Record


def answer_output(answer: Answer, headers: Headers) -> Output:
    """The answer record for a request, with where its time went."""
    return Output("answers", answer.id.encode(), answer.with_latency(headers).encode(), headers.to_list())


def error_code(error: PipelineError) -> str:
    return error.code if isinstance(error, RequestError) else "model_error"


def dead_letter(record: Record, error: PipelineError, stage: str) -> Output:
    """The dead-letter record of a bad record: its original key, value and headers, plus the reason.

    It can be replayed (``pipeline redrive``) once the cause is fixed.
    """
    reason = DeadLetterReason(stage, error_code(error), error.message, record.where)
    return Output("dead-letters", record.key, record.value or b"", list(record.headers) + reason.to_list())


def reject(record: Record, error: PipelineError, stage: str) -> list[Output]:
    """The two outputs of a bad request: an error answer and a dead-letter record.

    The answer is only possible when a request id can be recovered (from the
    value or the key). Stages after split use :func:`dead_letter` alone for a
    bad part or result: its request is still answered, by merge at its deadline.
    """
    headers = Headers.parse(record.headers)
    if REQUESTED_HOP not in headers.hops and record.timestamp_ms and record.timestamp_ms > 0:
        headers = headers.stamped(REQUESTED_HOP, record.timestamp_ms)
    headers = headers.stamped(stage)
    outputs: list[Output] = []
    request_id = error.request_id or recover_request_id(record.value, record.key)
    if request_id:
        outputs.append(answer_output(Answer.failure(request_id, error_code(error), error.message), headers))
    outputs.append(dead_letter(record, error, stage))
    return outputs


@dataclass(frozen=True, slots=True)
class BadRecords:
    """A stage's one policy for a record it cannot use (bad bytes, a request it cannot serve).

    Before a request is split its client can still be answered: the bad record
    gets an error answer and a dead letter (:func:`reject`). After split, a bad
    part, result or prompt is dead-lettered alone (``answers=False``): its
    request is still answered, by merge at its deadline, so never twice. Any
    other exception is not the record's fault; it ends the member, whose
    successor redoes the uncommitted batch.
    """

    stage: str
    answers: bool

    def outputs(self, record: Record, error: PipelineError) -> list[Output]:
        """What goes out for ``record`` instead of its result."""
        error = error.at(record.where)
        return reject(record, error, self.stage) if self.answers else [dead_letter(record, error, self.stage)]

    def each(self, records: Sequence[Record], one: Callable[[Record], Iterable[Output]]) -> list[Output]:
        """``one`` applied to every record; a record it refuses with a :class:`RequestError` gets :meth:`outputs`."""
        outputs: list[Output] = []
        for record in records:
            try:
                outputs.extend(one(record))
            except RequestError as exc:
                outputs.extend(self.outputs(record, exc))
        return outputs
