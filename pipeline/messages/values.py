"""The values that travel the answer path: requests, parts, results and answers."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from pipeline.errors import DecodeError
from pipeline.messages.codec import Codec, Int, check_index, encode
from pipeline.messages.headers import Headers


class Request(msgspec.Struct, frozen=True, omit_defaults=True):
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
    deadline_ms: Int | None = None
    session: str | None = None
    max_tokens: Int | None = None
    # faq: the language of ``text`` ("zh", "en", ...); detected when absent.
    lang: str | None = None

    def encode(self) -> bytes:
        return encode(self)

    @classmethod
    def decode(cls, data: bytes | None) -> Request:
        request = _REQUEST.decode(data)
        if not request.id:
            raise DecodeError("request: field 'id' must not be empty")
        return request


class Part(msgspec.Struct, frozen=True):
    """One independent piece of a request, tokenized and ready for the model.

    ``meta`` is the task's own bookkeeping that infer hands back unchanged to
    the task's postprocessing (QA offsets, the sub-question text, ...).
    """

    id: str
    task: str
    part: Int
    of: Int
    input_ids: list[Int]
    token_type_ids: list[Int] | None = None
    meta: dict[str, Any] = msgspec.field(default_factory=dict)

    @property
    def key(self) -> str:
        return part_key(self.id, self.part)

    def encode(self) -> bytes:
        return encode(self)

    @classmethod
    def decode(cls, data: bytes | None) -> Part:
        part = _PART.decode(data)
        check_index(part.part, part.of, "part")
        return part


class Result(msgspec.Struct, frozen=True):
    """The model's output for one part, already reduced to what merge needs."""

    id: str
    task: str
    part: Int
    of: Int
    output: dict[str, Any]

    def encode(self) -> bytes:
        return encode(self)

    @classmethod
    def decode(cls, data: bytes | None) -> Result:
        result = _RESULT.decode(data)
        check_index(result.part, result.of, "result")
        return result


class ErrorInfo(msgspec.Struct, frozen=True, omit_defaults=True):
    code: str
    message: str
    # For ``partial``: the part indices that never arrived.
    missing: list[Int] | None = None


class Answer(msgspec.Struct, frozen=True, omit_defaults=True):
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
    latency_ms: dict[str, float] = msgspec.field(default_factory=dict)
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
        return encode(self)

    @classmethod
    def decode(cls, data: bytes | None) -> Answer:
        return _ANSWER.decode(data)


_REQUEST = Codec(Request, "request")
_PART = Codec(Part, "part")
_RESULT = Codec(Result, "result")
_ANSWER = Codec(Answer, "answer")


def part_key(request_id: str, part: int) -> str:
    """The record key of a part: request id and index, so parts spread over partitions."""
    return f"{request_id}#{part}"
