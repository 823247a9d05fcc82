"""filter: decode, validate and normalise requests; reject what cannot be served.

Every request that reaches ``requests`` leaves filter as exactly one of:

* a clean :class:`~pipeline.messages.Request` on ``filtered`` with its deadline
  fixed in the headers, or
* an error answer on ``answers`` plus a dead-letter record with the original
  bytes (see :func:`pipeline.stages.base.reject`).

Normalisation: Unicode NFC, ``\\r\\n`` to ``\\n``, control characters dropped
(tab and newline kept), runs of spaces and tabs collapsed to one space, ends
stripped. QA answer offsets index into the context *as normalised here*; a
client that sends clean text (NFC, single spaces) gets offsets into its own.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from functools import partial

from msgspec.structs import replace

from pipeline.catalog import CATALOG
from pipeline.errors import DeadlineExceededError, InvalidRequestError, TooLargeError
from pipeline.messages import REQUESTED_HOP, Headers, Request, fix_deadline, left_ms, new_traceparent, now_ms
from pipeline.records import Output, Record, StageLogic
from pipeline.settings import Settings
from pipeline.stages.answer_cache import AnswerCache
from pipeline.stages.base import BadRecords, answer_output
from pipeline.stages.filter.queue_wait import QueueWait

STAGE = "filter"
BAD = BadRecords(STAGE, answers=True)  # a bad request is answered and dead-lettered
# Shedding (pipeline.stages.filter.queue_wait): only once a request is predicted to wait this long downstream,
# and with room to spare: a request admitted at the edge would only come back partial at its deadline,
# and the queue a shedding filter holds steady is then about deadline / SHED_FACTOR long.
SHED_FROM_MS = 1_000.0
SHED_FACTOR = 1.5
# Headers of one request, all together: far above what tracing and routing need.
MAX_HEADER_BYTES = 64 * 1024

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b\ufeff]")
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200a\u3000]+")
_SPACE_AROUND_NEWLINE = re.compile(r" ?\n ?")


def normalise(text: str) -> str:
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
    text = _SPACES.sub(" ", text)
    return _SPACE_AROUND_NEWLINE.sub("\n", text).strip()


def check_request(request: Request, settings: Settings, now: float) -> Request:
    """The request with its text normalised and its deadline fixed, or a RequestError."""
    rid = request.id
    spec = CATALOG.get(request.task)
    if spec is None:
        raise InvalidRequestError(f"unknown task {request.task!r}; known: {', '.join(CATALOG)}", request_id=rid)
    if not settings.model_for(request.task):
        missing = spec.generator if spec.generator and not settings.value(spec.generator) else spec.model
        raise InvalidRequestError(
            f"task {request.task!r} is not enabled here: no model is set (PIPELINE_{missing.upper()})",
            request_id=rid,
        )
    cleaned: dict[str, str] = {}
    # The fields the task reads; anything else in the request is ignored.
    for name in spec.fields:
        raw = getattr(request, name)
        if raw is None:
            raise InvalidRequestError(f"task {request.task!r} needs field {name!r}", request_id=rid)
        if len(raw) > settings.filter.max_text_chars:
            raise TooLargeError(
                f"field {name!r} has {len(raw)} characters; the limit is {settings.filter.max_text_chars}",
                request_id=rid,
            )
        value = normalise(raw)
        if not value:
            raise InvalidRequestError(f"field {name!r} is empty", request_id=rid)
        cleaned[name] = value
    left = left_ms(request.deadline_ms, now)
    if left is not None and left <= 0:
        raise DeadlineExceededError(
            f"deadline {request.deadline_ms} passed {-left:.0f} ms before filter", request_id=rid
        )
    return replace(
        request,
        text=cleaned.get("text", request.text),
        question=cleaned.get("question", request.question),
        context=cleaned.get("context", request.context),
    )


def filter_records(
    records: Sequence[Record], settings: Settings, cache: AnswerCache | None = None, queue: QueueWait | None = None
) -> list[Output]:
    """The filter stage's core: each record becomes a filtered request, a cached answer or a rejection."""
    if queue is not None:
        queue.start()  # a member's first batch: from now on it predicts the wait downstream
    return BAD.each(records, lambda record: [filter_one(record, settings, cache, queue)])


def filter_one(
    record: Record, settings: Settings, cache: AnswerCache | None = None, queue: QueueWait | None = None
) -> Output:
    now = now_ms()
    if record.value is not None and len(record.value) > settings.filter.max_request_bytes:
        raise TooLargeError(f"request is {len(record.value)} bytes; the limit is {settings.filter.max_request_bytes}")
    header_bytes = sum(len(name) + len(value) for name, value in record.headers)
    if header_bytes > MAX_HEADER_BYTES:
        # Headers travel with every part, result and answer: bound them here.
        raise TooLargeError(f"headers are {header_bytes} bytes; the limit is {MAX_HEADER_BYTES}")
    request = Request.decode(record.value)
    headers = Headers.parse(record.headers)
    # The deadline, fixed here; from here on it travels in the header alone (pipeline/messages/deadline.py).
    produced = record.timestamp_ms if record.timestamp_ms and record.timestamp_ms > 0 else now
    deadline = fix_deadline(request.deadline_ms, headers.deadline_ms, produced, settings.filter.default_timeout_ms)
    request = replace(check_request(replace(request, deadline_ms=deadline), settings, now), deadline_ms=None)
    headers.deadline_ms = deadline
    headers.traceparent = headers.traceparent or new_traceparent()
    headers = headers.stamped(REQUESTED_HOP, produced).stamped(STAGE)
    if cache is not None:
        cached = cache.answer(request)
        if cached is not None:
            return answer_output(cached, headers)
    ahead = queue.wait_ms(request) if queue is not None else 0.0
    if ahead >= SHED_FROM_MS and deadline - now < SHED_FACTOR * ahead:
        # Shed at once: it would queue through split and infer only to miss its deadline there.
        raise DeadlineExceededError(
            f"{deadline - now:.0f} ms left, but it would wait about {ahead:.0f} ms in the stages after filter",
            request_id=request.id,
        )
    return Output("filtered", request.id.encode(), request.encode(), headers.to_list())


def build(settings: Settings) -> StageLogic:
    """filter's core: a function of the record, the settings, the answer cache it follows and the
    predicted wait downstream (read in the background once the member handles its first batch)."""
    cache = AnswerCache(settings)
    queue = QueueWait(settings)
    return StageLogic(partial(filter_records, settings=settings, cache=cache, queue=queue), cache, watcher=queue)
