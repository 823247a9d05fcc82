"""Every message type of the pipeline and its orjson encoding.

Topic      key                  value
---------  -------------------  ----------------------------------------------
requests   request id           :class:`Request`  (written by clients)
filtered   request id           :class:`Request`  (validated, normalised)
parts      "<id>#<part>"        :class:`Part`     (tokens, ready for the model)
results    request id           :class:`Result`   (one model output per part)
answers    request id           :class:`Answer`   (exactly one per request)

Values are JSON objects. Decoding never raises anything but
:class:`~pipeline.errors.DecodeError` (bad bytes, wrong shape) so a stage can
turn any bad record into an error answer and a dead-letter record.

Headers carry what a stage needs without decoding the value (see
:class:`Headers`): the deadline, a W3C trace context and one timestamp per hop.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from pipeline.errors import DecodeError

TASKS: tuple[str, ...] = ("qa", "classify", "embed", "faq")

# -- headers --------------------------------------------------------------------

DEADLINE_HEADER = "pipeline-deadline-ms"
TRACE_HEADER = "traceparent"
HOP_PREFIX = "pipeline-hop-"
REQUESTED_HOP = "requested"
"""The hop recorded for the client's produce time (the request record's timestamp)."""

MAX_SAFE_MS = 2.0**53
"""Epoch milliseconds beyond this are not a time (and do not survive JSON or a float)."""

HeaderList = list[tuple[str, bytes]]
RawHeaders = Sequence[tuple[str, str | bytes | None]] | Mapping[str, str | bytes | None] | None
"""Headers as Kafka clients hand them over: a list of pairs, or a mapping."""


KafkaHeaders = list[tuple[str, str | bytes | None]]
"""What confluent-kafka's produce() takes."""


def header_list(raw: RawHeaders) -> HeaderList:
    """Headers from any Kafka client as a plain list of (name, bytes)."""
    items = raw.items() if isinstance(raw, Mapping) else (raw or ())
    return [(key, (value.encode() if isinstance(value, str) else value) or b"") for key, value in items]


def kafka_headers(headers: HeaderList) -> KafkaHeaders:
    return [(key, value) for key, value in headers]


def now_ms() -> float:
    return time.time() * 1000.0


def new_traceparent() -> str:
    """A fresh W3C traceparent: version 00, random trace and span ids, sampled."""
    return f"00-{os.urandom(16).hex()}-{os.urandom(8).hex()}-01"


@dataclass(slots=True)
class Headers:
    """The pipeline's view of a record's headers.

    Unknown headers are kept and passed on untouched, so clients can add their
    own (tenant, correlation ids) and see them again on the answer.
    """

    deadline_ms: int | None = None
    traceparent: str | None = None
    hops: dict[str, float] = field(default_factory=dict)
    other: HeaderList = field(default_factory=list)

    @classmethod
    def parse(cls, raw: RawHeaders) -> Headers:
        headers = cls()
        for key, value in header_list(raw):
            if key == DEADLINE_HEADER:
                deadline = _number(value)
                # Garbage, NaN, infinities and times past 2**53 ms are no deadline.
                headers.deadline_ms = int(deadline) if deadline is not None and abs(deadline) < MAX_SAFE_MS else None
            elif key.startswith(HOP_PREFIX):
                at = _number(value)
                if at is not None:  # a malformed hop is dropped, not fatal
                    headers.hops[key[len(HOP_PREFIX) :]] = at
            elif key == TRACE_HEADER:
                headers.traceparent = value.decode("utf-8", "replace")
            else:
                headers.other.append((key, value))
        return headers

    def stamped(self, hop: str, at_ms: float | None = None) -> Headers:
        """A copy with ``hop`` recorded at ``at_ms`` (now by default)."""
        hops = dict(self.hops)
        hops[hop] = now_ms() if at_ms is None else at_ms
        return Headers(self.deadline_ms, self.traceparent, hops, list(self.other))

    def to_list(self) -> HeaderList:
        out: HeaderList = list(self.other)
        if self.deadline_ms is not None:
            out.append((DEADLINE_HEADER, str(self.deadline_ms).encode()))
        if self.traceparent:
            out.append((TRACE_HEADER, self.traceparent.encode()))
        for hop, at in self.hops.items():
            out.append((HOP_PREFIX + hop, f"{at:.3f}".encode()))
        return out

    def latency_ms(self) -> dict[str, float]:
        """Time spent reaching each hop from the one before, in hop order."""
        ordered = sorted(self.hops.items(), key=lambda kv: kv[1])
        return {hop: round(at - prev, 3) for (_, prev), (hop, at) in itertools.pairwise(ordered)}


def _number(value: bytes) -> float | None:
    try:
        return float(value.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return None


# -- values ---------------------------------------------------------------------


def _loads(data: bytes | None, what: str) -> dict[str, Any]:
    if data is None:
        raise DecodeError(f"{what}: empty value")
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        # orjson rejects invalid UTF-8 here too, with a message that says so.
        raise DecodeError(f"{what}: not valid UTF-8 JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise DecodeError(f"{what}: expected a JSON object, got {type(value).__name__}")
    return value


def _field(
    obj: Mapping[str, Any], name: str, kind: type | tuple[type, ...], what: str, *, required: bool = True
) -> Any:
    value = obj.get(name)
    if value is None:
        if required:
            raise DecodeError(f"{what}: missing field {name!r}")
        return None
    # bool is an int in Python; a JSON true is never a valid number here.
    if isinstance(value, bool) and kind is not bool:
        raise DecodeError(f"{what}: field {name!r} must be {_kind_name(kind)}, got boolean")
    if not isinstance(value, kind):
        raise DecodeError(f"{what}: field {name!r} must be {_kind_name(kind)}, got {type(value).__name__}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {
        str: "a string",
        int: "an integer",
        float: "a number",
        dict: "an object",
        list: "an array",
        bool: "a boolean",
    }
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def recover_request_id(data: bytes | None, key: bytes | None) -> str | None:
    """Best effort: the request id from a bad record's value, else its key."""
    if data:
        try:
            value = orjson.loads(data)
            if isinstance(value, dict) and isinstance(value.get("id"), str) and value["id"]:
                return str(value["id"])
        except orjson.JSONDecodeError:
            pass
    if key:
        try:
            return key.decode("utf-8") or None
        except UnicodeDecodeError:
            return None
    return None


@dataclass(frozen=True, slots=True)
class Request:
    """What a client asks. Which text fields are needed depends on ``task``:

    * ``qa``: ``question`` and ``context``
    * ``classify``, ``embed``, ``faq``: ``text``
    """

    id: str
    task: str
    text: str | None = None
    question: str | None = None
    context: str | None = None
    deadline_ms: int | None = None

    def encode(self) -> bytes:
        return orjson.dumps({k: v for k, v in _asdict(self).items() if v is not None})

    @classmethod
    def decode(cls, data: bytes | None) -> Request:
        obj = _loads(data, "request")
        what = "request"
        rid = _field(obj, "id", str, what)
        if not rid:
            raise DecodeError("request: field 'id' must not be empty")
        return cls(
            id=rid,
            task=_field(obj, "task", str, what),
            text=_field(obj, "text", str, what, required=False),
            question=_field(obj, "question", str, what, required=False),
            context=_field(obj, "context", str, what, required=False),
            deadline_ms=_field(obj, "deadline_ms", int, what, required=False),
        )


@dataclass(frozen=True, slots=True)
class Part:
    """One independent piece of a request, tokenized and ready for the model.

    ``meta`` is the task's own bookkeeping that infer hands back unchanged to
    the task's postprocessing (QA offsets, the sub-question text, ...).
    """

    id: str
    task: str
    part: int
    of: int
    input_ids: list[int]
    token_type_ids: list[int] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return part_key(self.id, self.part)

    def encode(self) -> bytes:
        return orjson.dumps(_asdict(self))

    @classmethod
    def decode(cls, data: bytes | None) -> Part:
        obj = _loads(data, "part")
        what = "part"
        part = cls(
            id=_field(obj, "id", str, what),
            task=_field(obj, "task", str, what),
            part=_field(obj, "part", int, what),
            of=_field(obj, "of", int, what),
            input_ids=_field(obj, "input_ids", list, what),
            token_type_ids=_field(obj, "token_type_ids", list, what, required=False),
            meta=_field(obj, "meta", dict, what, required=False) or {},
        )
        _check_index(part.part, part.of, what)
        return part


@dataclass(frozen=True, slots=True)
class Result:
    """The model's output for one part, already reduced to what merge needs."""

    id: str
    task: str
    part: int
    of: int
    output: dict[str, Any]

    def encode(self) -> bytes:
        return orjson.dumps(_asdict(self), option=orjson.OPT_SERIALIZE_NUMPY)

    @classmethod
    def decode(cls, data: bytes | None) -> Result:
        obj = _loads(data, "result")
        what = "result"
        result = cls(
            id=_field(obj, "id", str, what),
            task=_field(obj, "task", str, what),
            part=_field(obj, "part", int, what),
            of=_field(obj, "of", int, what),
            output=_field(obj, "output", dict, what),
        )
        _check_index(result.part, result.of, what)
        return result


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    code: str
    message: str
    # For ``partial``: the part indices that never arrived.
    missing: list[int] | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    """The one reply a request gets: ``status`` is ``ok`` or ``error``.

    An error answer carries ``error.code`` (see ``pipeline.errors.ERROR_CODES``);
    a ``partial`` one also carries the ``result`` merged from the parts that did
    arrive. ``latency_ms`` is the time to reach each hop from the previous one.
    """

    id: str
    status: str
    task: str | None = None
    result: dict[str, Any] | None = None
    error: ErrorInfo | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @classmethod
    def success(cls, request_id: str, task: str, result: dict[str, Any]) -> Answer:
        return cls(id=request_id, status="ok", task=task, result=result)

    @classmethod
    def failure(
        cls,
        request_id: str,
        code: str,
        message: str,
        *,
        task: str | None = None,
        result: dict[str, Any] | None = None,
        missing: Iterable[int] | None = None,
    ) -> Answer:
        return cls(
            id=request_id,
            status="error",
            task=task,
            result=result,
            error=ErrorInfo(code, message, sorted(missing) if missing is not None else None),
        )

    def with_latency(self, headers: Headers) -> Answer:
        return Answer(self.id, self.status, self.task, self.result, self.error, headers.latency_ms())

    def encode(self) -> bytes:
        obj = _asdict(self)
        if self.error is not None and self.error.missing is None:
            obj["error"].pop("missing")
        return orjson.dumps({k: v for k, v in obj.items() if v is not None}, option=orjson.OPT_SERIALIZE_NUMPY)

    @classmethod
    def decode(cls, data: bytes | None) -> Answer:
        obj = _loads(data, "answer")
        what = "answer"
        err = _field(obj, "error", dict, what, required=False)
        return cls(
            id=_field(obj, "id", str, what),
            status=_field(obj, "status", str, what),
            task=_field(obj, "task", str, what, required=False),
            result=_field(obj, "result", dict, what, required=False),
            error=ErrorInfo(
                _field(err, "code", str, "answer.error"),
                _field(err, "message", str, "answer.error"),
                _field(err, "missing", list, "answer.error", required=False),
            )
            if err is not None
            else None,
            latency_ms=_field(obj, "latency_ms", dict, what, required=False) or {},
        )


def part_key(request_id: str, part: int) -> str:
    """The record key of a part: request id and index, so parts spread over partitions."""
    return f"{request_id}#{part}"


def _check_index(part: int, of: int, what: str) -> None:
    if of < 1 or not 0 <= part < of:
        raise DecodeError(f"{what}: part {part} of {of} is out of range")


def _asdict(obj: Any) -> dict[str, Any]:
    # dataclasses.asdict deep-copies; these values are plain JSON already.
    out: dict[str, Any] = {}
    for name in obj.__slots__:
        value = getattr(obj, name)
        if hasattr(value, "__slots__") and hasattr(value, "__dataclass_fields__"):
            value = _asdict(value)
        out[name] = value
    return out
