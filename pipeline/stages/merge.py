"""merge: gather the parts of each request and answer it exactly once.

The state of one request (:class:`Gather`) is a small JSON document kept in a
fault-tolerant table keyed by request id (``pipeline.kafka.merge_member``
keeps it, backed by the compacted ``merge-state`` topic). :func:`step` is the
whole logic:
given the state and one record from ``results``, it returns the new state and
what to emit. It knows three kinds of record:

* a part's :class:`~pipeline.messages.Result` from infer;
* ``expect`` from split: how many parts to wait for (and, in the headers, the
  deadline), so a request is known before any of its parts is back;
* ``deadline`` and ``expire`` ticks, which the merge process sends itself
  (to the same key and so the same partition) when a deadline passes or a
  finished request's tombstone is old enough to drop. State only ever changes
  inside stream processing, so it stays consistent with the changelog.

Once answered, the state shrinks to a tombstone (``done``) that makes late and
duplicate parts harmless; the tombstone is dropped after
``Settings.merge_done_retention_ms``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import orjson

from pipeline.errors import DecodeError, PipelineError
from pipeline.messages import Answer, Headers, Result
from pipeline.settings import Settings
from pipeline.stages.base import Output, Record, answer_output, reject
from pipeline.stages.split import CONTROL_HEADER, EXPECT

STAGE = "merge"
DEADLINE = b"deadline"
EXPIRE = b"expire"

log = logging.getLogger("pipeline.merge")


@dataclass
class Gather:
    """What merge knows about one request."""

    task: str | None = None
    of: int | None = None
    deadline_ms: int | None = None
    parts: dict[int, dict[str, Any]] = field(default_factory=dict)
    hops: dict[str, float] = field(default_factory=dict)
    traceparent: str | None = None
    done_ms: float | None = None
    # The results partition the request's records arrive on: ticks go there too.
    partition: int | None = None

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "task": self.task,
                "of": self.of,
                "deadline_ms": self.deadline_ms,
                "parts": {str(k): v for k, v in self.parts.items()},
                "hops": self.hops,
                "traceparent": self.traceparent,
                "done_ms": self.done_ms,
                "partition": self.partition,
            },
            option=orjson.OPT_SERIALIZE_NUMPY,
        )

    @classmethod
    def decode(cls, data: bytes | None) -> Gather:
        if not data:
            return cls()
        obj = orjson.loads(data)
        return cls(
            task=obj.get("task"),
            of=obj.get("of"),
            deadline_ms=obj.get("deadline_ms"),
            parts={int(k): v for k, v in (obj.get("parts") or {}).items()},
            hops=obj.get("hops") or {},
            traceparent=obj.get("traceparent"),
            done_ms=obj.get("done_ms"),
            partition=obj.get("partition"),
        )

    def absorb(self, headers: Headers) -> None:
        """Keep the deadline, trace and the latest time of each hop seen so far."""
        self.deadline_ms = self.deadline_ms or headers.deadline_ms
        self.traceparent = self.traceparent or headers.traceparent
        for hop, at in headers.hops.items():
            self.hops[hop] = max(at, self.hops.get(hop, at))

    def headers(self) -> Headers:
        return Headers(self.deadline_ms, self.traceparent, dict(self.hops)).stamped(STAGE)


@dataclass
class Step:
    """The outcome of one record: the state to keep (None: delete it) and what to send."""

    state: Gather | None
    outputs: list[Output] = field(default_factory=list)


def step(state: Gather | None, record: Record, settings: Settings, now: float) -> Step:
    """Apply one ``results`` record to the state of its request."""
    request_id = (record.key or b"").decode("utf-8", "replace")
    gather = state or Gather(partition=record.partition)
    control = dict(record.headers).get(CONTROL_HEADER)
    headers = Headers.parse(record.headers)

    if control == EXPIRE:
        if gather.done_ms is not None and now - gather.done_ms >= settings.merge_done_retention_ms:
            return Step(None)
        return Step(state)
    if gather.done_ms is not None:
        return Step(gather)  # answered already: a late or duplicate record changes nothing

    if control == EXPECT:
        try:
            expect = orjson.loads(record.value or b"")
            gather.of, gather.task = int(expect["of"]), str(expect["task"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            return Step(state, reject(record, DecodeError(f"bad expect record: {exc}").at(record.where), STAGE)[-1:])
        gather.absorb(headers)
    elif control == DEADLINE:
        pass  # only the deadline check below
    else:
        try:
            result = Result.decode(record.value)
        except DecodeError as exc:
            # Dead-letter only: the request is still answered, by its deadline.
            return Step(state, reject(record, exc.at(record.where), STAGE)[-1:])
        gather.absorb(headers)
        gather.task, gather.of = result.task, gather.of or result.of
        error = result.output.get("error")
        if isinstance(error, dict):
            message = f"part {result.part} of {result.of} failed: {error.get('message', 'model error')}"
            return _answer(gather, Answer.failure(request_id, "model_error", message, task=result.task), now)
        gather.parts.setdefault(result.part, result.output)

    if gather.of is not None and len(gather.parts) >= gather.of:
        return _answer(gather, _merged(request_id, gather), now)
    if gather.deadline_ms is not None and now >= gather.deadline_ms:
        return _answer(gather, _overdue(request_id, gather), now)
    return Step(gather)


def _merged(request_id: str, gather: Gather) -> Answer:
    from pipeline.tasks import get_task

    assert gather.task is not None and gather.of is not None
    results = [Result(request_id, gather.task, i, gather.of, out) for i, out in sorted(gather.parts.items())]
    try:
        return Answer.success(request_id, gather.task, get_task(gather.task).merge(results, gather.of))
    except (PipelineError, ValueError, KeyError, TypeError, IndexError) as exc:
        log.exception("merge of request %s failed", request_id)
        return Answer.failure(request_id, "model_error", f"merging the parts failed: {exc}", task=gather.task)


def _overdue(request_id: str, gather: Gather) -> Answer:
    """The answer at the deadline: partial when some parts came back, else deadline_exceeded."""
    if not gather.parts or gather.task is None or gather.of is None:
        return Answer.failure(
            request_id,
            "deadline_exceeded",
            "no part of the request was processed before its deadline",
            task=gather.task,
        )
    missing = sorted(set(range(gather.of)) - set(gather.parts))
    merged = _merged(request_id, gather)
    message = f"{len(missing)} of {gather.of} parts missed the deadline"
    return Answer.failure(request_id, "partial", message, task=gather.task, result=merged.result, missing=missing)


def _answer(gather: Gather, answer: Answer, now: float) -> Step:
    headers = gather.headers()
    done = Gather(
        task=gather.task, of=gather.of, deadline_ms=gather.deadline_ms, done_ms=now, partition=gather.partition
    )
    log.info("answered %s: %s%s", answer.id, answer.status, f" ({answer.error.code})" if answer.error else "")
    return Step(done, [answer_output(answer, headers)])


def due_tick(gather: Gather, settings: Settings, now: float) -> bytes | None:
    """The tick the merge process should send itself for this request now, if any."""
    if gather.done_ms is None:
        if gather.deadline_ms is not None and now >= gather.deadline_ms:
            return DEADLINE
    elif now - gather.done_ms >= settings.merge_done_retention_ms:
        return EXPIRE
    return None
