"""The values that travel the answer path: requests, parts, results and answers."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any

import orjson

from pipeline.errors import DecodeError
from pipeline.messages.codec import asdict, check_index, loads, read_field
from pipeline.messages.headers import Headers


@dataclass(frozen=True, slots=True)
class Request:
    """What a client asks. Which text fields are needed depends on ``task``:

    * ``qa``: ``question`` and ``context``
    * ``classify``, ``embed``, ``faq``, ``chat``: ``text``

    ``chat`` also reads ``session`` (a conversation id: its earlier turns are
    in the prompt) and ``max_tokens`` (at most this many new tokens).
    """

    id: str
    task: str
    text: str | None = None
    question: str | None = None
    context: str | None = None
    deadline_ms: int | None = None
    session: str | None = None
    max_tokens: int | None = None
    # faq: the language of ``text`` ("zh", "en", ...); detected when absent.
    lang: str | None = None

    def encode(self) -> bytes:
        return orjson.dumps({k: v for k, v in asdict(self).items() if v is not None})

    @classmethod
    def decode(cls, data: bytes | None) -> Request:
        obj = loads(data, "request")
        what = "request"
        rid = read_field(obj, "id", str, what)
        if not rid:
            raise DecodeError("request: field 'id' must not be empty")
        return cls(
            id=rid,
            task=read_field(obj, "task", str, what),
            text=read_field(obj, "text", str, what, required=False),
            question=read_field(obj, "question", str, what, required=False),
            context=read_field(obj, "context", str, what, required=False),
            deadline_ms=read_field(obj, "deadline_ms", int, what, required=False),
            session=read_field(obj, "session", str, what, required=False),
            max_tokens=read_field(obj, "max_tokens", int, what, required=False),
            lang=read_field(obj, "lang", str, what, required=False),
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
    meta: dict[str, Any] = dc_field(default_factory=dict)

    @property
    def key(self) -> str:
        return part_key(self.id, self.part)

    def encode(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def decode(cls, data: bytes | None) -> Part:
        obj = loads(data, "part")
        what = "part"
        part = cls(
            id=read_field(obj, "id", str, what),
            task=read_field(obj, "task", str, what),
            part=read_field(obj, "part", int, what),
            of=read_field(obj, "of", int, what),
            input_ids=read_field(obj, "input_ids", list, what),
            token_type_ids=read_field(obj, "token_type_ids", list, what, required=False),
            meta=read_field(obj, "meta", dict, what, required=False) or {},
        )
        check_index(part.part, part.of, what)
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
        return orjson.dumps(asdict(self), option=orjson.OPT_SERIALIZE_NUMPY)

    @classmethod
    def decode(cls, data: bytes | None) -> Result:
        obj = loads(data, "result")
        what = "result"
        result = cls(
            id=read_field(obj, "id", str, what),
            task=read_field(obj, "task", str, what),
            part=read_field(obj, "part", int, what),
            of=read_field(obj, "of", int, what),
            output=read_field(obj, "output", dict, what),
        )
        check_index(result.part, result.of, what)
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
    ``cached`` is true when filter answered from the answer cache (the
    ``result`` is the one given earlier to the same request text).
    """

    id: str
    status: str
    task: str | None = None
    result: dict[str, Any] | None = None
    error: ErrorInfo | None = None
    latency_ms: dict[str, float] = dc_field(default_factory=dict)
    cached: bool | None = None

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
        return Answer(self.id, self.status, self.task, self.result, self.error, headers.latency_ms(), self.cached)

    def encode(self) -> bytes:
        obj = asdict(self)
        if self.error is not None and self.error.missing is None:
            obj["error"].pop("missing")
        return orjson.dumps({k: v for k, v in obj.items() if v is not None}, option=orjson.OPT_SERIALIZE_NUMPY)

    @classmethod
    def decode(cls, data: bytes | None) -> Answer:
        obj = loads(data, "answer")
        what = "answer"
        err = read_field(obj, "error", dict, what, required=False)
        return cls(
            id=read_field(obj, "id", str, what),
            status=read_field(obj, "status", str, what),
            task=read_field(obj, "task", str, what, required=False),
            result=read_field(obj, "result", dict, what, required=False),
            error=ErrorInfo(
                read_field(err, "code", str, "answer.error"),
                read_field(err, "message", str, "answer.error"),
                read_field(err, "missing", list, "answer.error", required=False),
            )
            if err is not None
            else None,
            latency_ms=read_field(obj, "latency_ms", dict, what, required=False) or {},
            cached=read_field(obj, "cached", bool, what, required=False),
        )


def part_key(request_id: str, part: int) -> str:
    """The record key of a part: request id and index, so parts spread over partitions."""
    return f"{request_id}#{part}"
