"""merge: gather the parts of each request and answer it exactly once.

The state of one request (:class:`Gather`) is a small JSON document kept in a
fault-tolerant table keyed by request id (the runner's state table, backed by
the compacted ``merge-state`` topic, see :class:`Merger`). :func:`step` is the
whole logic: given the state and one record from ``results``, it returns the
new state and what to emit. It knows three kinds of record:

* a part's :class:`~pipeline.messages.Result` from infer;
* ``expect`` from split: how many parts to wait for (and, in the headers, the
  deadline), so a request is known before any of its parts is back;
* ``deadline`` and ``expire`` ticks, which the merge process sends itself
  (to the same key and so the same partition) when a deadline passes or a
  finished request's tombstone is old enough to drop. State only ever changes
  inside stream processing, so it stays consistent with the changelog.

Once answered, the state shrinks to a tombstone (``done``) that makes late and
duplicate parts harmless; the tombstone is dropped after
``settings.merge.merge_done_retention_ms``.
"""

from __future__ import annotations

import heapq
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import orjson

from pipeline.catalog import CATALOG
from pipeline.errors import ERROR_CODES, DecodeError, PipelineError
from pipeline.messages import SCATTERED_COSTS, Answer, Control, Expect, Headers, Result, now_ms, passed
from pipeline.messages.codec import Codec, Int, encode
from pipeline.records import Output, Record, StageContext, StageLogic, StatefulHooks
from pipeline.settings import Settings
from pipeline.stages.base import BadRecords, answer_output

STAGE = "merge"
BAD = BadRecords(STAGE, answers=False)  # a bad record is dead-lettered; merge answers its request

log = logging.getLogger("pipeline.merge")


class Gather(msgspec.Struct):
    """What merge knows about one request: its state-table value, a typed struct with a validating codec."""

    task: str | None = None
    of: Int | None = None
    deadline_ms: Int | None = None
    parts: dict[int, dict[str, Any]] = msgspec.field(default_factory=dict)
    hops: dict[str, float] = msgspec.field(default_factory=dict)
    traceparent: str | None = None
    done_ms: float | None = None
    # The results partition the request's records arrive on: ticks go there too.
    partition: Int | None = None
    costs: dict[str, float] = msgspec.field(default_factory=dict)  # what its parts cost so far (Headers.costs)

    def encode(self) -> bytes:
        return encode(self)

    @classmethod
    def decode(cls, data: bytes | None) -> Gather:
        return _GATHER.decode(data) if data else cls()

    def absorb(self, headers: Headers) -> None:
        """Keep the deadline, trace and the latest time of each hop seen so far."""
        self.deadline_ms = self.deadline_ms or headers.deadline_ms
        self.traceparent = self.traceparent or headers.traceparent
        for hop, at in headers.hops.items():
            self.hops[hop] = max(at, self.hops.get(hop, at))

    def charge(self, headers: Headers) -> None:
        """Add one part's costs: per-part costs (split's share, infer, model) add up; the rest came copied."""
        for name, ms in headers.costs.items():
            if name in SCATTERED_COSTS:
                self.costs[name] = round(self.costs.get(name, 0.0) + ms, 3)
            else:
                self.costs[name] = max(ms, self.costs.get(name, 0.0))

    def headers(self) -> Headers:
        return Headers(self.deadline_ms, self.traceparent, dict(self.hops), costs=dict(self.costs)).stamped(STAGE)


_GATHER = Codec(Gather, "merge state")


@dataclass
class Step:
    """The outcome of one record: the state to keep (None: delete it) and what to send."""

    state: Gather | None
    outputs: list[Output] = field(default_factory=list)


def step(state: Gather | None, record: Record, settings: Settings, now: float) -> Step:
    """Apply one ``results`` record to the state of its request."""
    request_id = (record.key or b"").decode("utf-8", "replace")
    gather = state or Gather(partition=record.partition)
    control = Control.of(record.headers)
    headers = Headers.parse(record.headers)

    if control is Control.EXPIRE:
        if gather.done_ms is not None and now - gather.done_ms >= settings.merge.merge_done_retention_ms:
            return Step(None)
        return Step(state)
    if gather.done_ms is not None:
        return Step(gather)  # answered already: a late or duplicate record changes nothing

    if control is Control.EXPECT:
        try:
            expect = Expect.decode(record.value)
        except DecodeError as exc:
            return Step(state, BAD.outputs(record, exc))
        gather.of, gather.task = expect.of, expect.task
        gather.absorb(headers)
        gather.charge(headers)
    elif control is Control.DEADLINE:
        pass  # only the deadline check below
    else:
        try:
            result = Result.decode(record.value)
        except DecodeError as exc:
            # Dead-letter only: the request is still answered, by its deadline.
            return Step(state, BAD.outputs(record, exc))
        gather.absorb(headers)
        if result.part not in gather.parts:  # a duplicate part costs nothing more
            gather.charge(headers)
        gather.task, gather.of = result.task, gather.of or result.of
        error = result.output.get("error")
        if isinstance(error, dict):
            message = f"part {result.part} of {result.of} failed: {error.get('message', 'model error')}"
            code = error.get("code") if error.get("code") in ERROR_CODES else "model_error"
            return _answer(gather, Answer.failure(request_id, str(code), message, task=result.task), now)
        gather.parts.setdefault(result.part, result.output)

    if gather.of is not None and len(gather.parts) >= gather.of:
        merged = _merged(request_id, gather)
        delivers = CATALOG[gather.task].delivers if gather.task in CATALOG else "answers"
        if merged.ok and merged.result is not None and delivers != "answers":
            return _hand_off(gather, delivers, request_id, merged.result, now)
        return _answer(gather, merged, now)
    if passed(gather.deadline_ms, now):
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
    # An error answer is news; an ok one is the normal case, one a request: at
    # INFO its line (written unbuffered) cost merge more CPU than the answer.
    if answer.error is not None:
        log.info("answered %s: %s (%s)", answer.id, answer.status, answer.error.code)
    else:
        log.debug("answered %s: %s", answer.id, answer.status)
    return Step(done, [answer_output(answer, headers)])


def _hand_off(gather: Gather, topic: str, request_id: str, result: dict[str, Any], now: float) -> Step:
    """A task whose reply another stage writes (its catalog ``delivers``): send it there, not to answers."""
    key = str(result.pop("key", request_id)).encode()
    done = Gather(
        task=gather.task, of=gather.of, deadline_ms=gather.deadline_ms, done_ms=now, partition=gather.partition
    )
    log.debug("handed %s to %s", request_id, topic)
    return Step(done, [Output(topic, key, orjson.dumps(result), gather.headers().to_list())])


def due(gather: Gather, settings: Settings) -> tuple[float, Control] | None:
    """When this request next needs a tick, and which: its deadline, or its tombstone's expiry."""
    if gather.done_ms is None:
        return None if gather.deadline_ms is None else (float(gather.deadline_ms), Control.DEADLINE)
    return gather.done_ms + settings.merge.merge_done_retention_ms, Control.EXPIRE


# -- the stage: the step above over a changelog-backed table, and its ticks ------------------

# A tick already sent is sent again after this long if the request still needs it
# (the tick was lost, or the member was busy): the step it causes is idempotent.
TICK_RESEND_MS = 2_000.0


class Merger(StatefulHooks):
    """merge's handler and hooks: :func:`step` over the stage's table, plus deadline ticks.

    The table (request id → :class:`Gather`, per ``results`` partition) is the
    runner's :class:`~pipeline.records.StateTable`, restored from ``merge-state``
    before a partition's records are handled. Ticks are found through a heap
    keyed by when each request next needs one, so a turn of the loop costs in
    proportion to the ticks that fall due, not to the requests held.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.heap: list[tuple[float, int, bytes]] = []  # (due ms, partition, request key)
        self.lock = threading.Lock()  # the heap is fed by the handler's thread and drained by the loop's

    # -- the handler (worker thread) ---------------------------------------------------------

    def __call__(self, records: Sequence[Record]) -> list[Output]:
        outputs: list[Output] = []
        now = now_ms()
        for record in records:
            if not record.key:
                error = DecodeError("result without a key: cannot tell which request it belongs to")
                outputs.extend(BAD.outputs(record, error))
                continue
            before = self.table.get(record.partition, record.key)
            outcome = step(Gather.decode(before) if before else None, record, self.settings, now)
            after = None if outcome.state is None else outcome.state.encode()
            if after != before:
                outputs.append(self.table.put(record.partition, record.key, after))
                if outcome.state is not None:
                    self._schedule(record.partition, record.key, outcome.state)
            outputs.extend(outcome.outputs)
        return outputs

    # -- hooks (the loop's thread) --------------------------------------------------------------

    def assigned(self, partitions: list[int]) -> None:
        held = 0
        for partition in partitions:
            for key, value in list(self.table.partitions.get(partition, {}).items()):
                self._schedule(partition, key, Gather.decode(value))
                held += 1
        log.info("merge holds %d requests of partitions %s", held, partitions)

    def start(self, context: StageContext) -> None:
        super().start(context)
        context.schedule(self.settings.merge.merge_tick_ms, self.tick)

    def tick(self, now: float) -> None:
        """Every ``merge_tick_ms``: send each request whose wait fell due its tick record."""
        assert self.send is not None  # scheduled at start
        with self.lock:
            due_now: list[tuple[float, int, bytes]] = []
            while self.heap and self.heap[0][0] <= now:
                due_now.append(heapq.heappop(self.heap))
        for _, partition, key in due_now:
            value = self.table.get(partition, key)
            if value is None:
                continue  # answered and expired, or the partition is no longer ours
            next_due = due(Gather.decode(value), self.settings)
            if next_due is None:
                continue
            at, kind = next_due
            if at > now:
                with self.lock:
                    heapq.heappush(self.heap, (at, partition, key))
                continue
            self.send(Output("results", key, b"{}", [kind.header()], partition=partition))
            with self.lock:  # again later, unless the tick's step changes what is due
                heapq.heappush(self.heap, (now + TICK_RESEND_MS, partition, key))

    def _schedule(self, partition: int, key: bytes, gather: Gather) -> None:
        next_due = due(gather, self.settings)
        if next_due is not None:
            with self.lock:
                heapq.heappush(self.heap, (next_due[0], partition, key))


def build(settings: Settings) -> StageLogic:
    merger = Merger(settings)
    return StageLogic(merger, merger)
