"""Control records and headers: what stages tell each other besides the messages themselves.

* ``expect`` (split → merge, on ``results``): how many parts a request has, so
  merge knows a request before any of its parts is back;
* ``deadline`` and ``expire`` ticks (merge → itself, on ``results``): a
  request's deadline passed, or an answered request's tombstone may go;
* dead-letter reasons: the headers added to a record sent to ``dead-letters``.

A control record carries :data:`CONTROL_HEADER` with a :class:`Control` value;
a record without it is an ordinary message.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import msgspec

from pipeline.errors import DecodeError
from pipeline.messages.codec import Codec, Int, encode
from pipeline.messages.headers import HeaderList

CONTROL_HEADER = "pipeline-control"


class Control(Enum):
    """The kinds of control record; the value is the header's bytes."""

    EXPECT = b"expect"
    DEADLINE = b"deadline"
    EXPIRE = b"expire"

    def header(self) -> tuple[str, bytes]:
        return (CONTROL_HEADER, self.value)

    @classmethod
    def of(cls, headers: HeaderList) -> Control | None:
        """The control kind a record's headers name; None for an ordinary record (or an unknown kind)."""
        for key, value in headers:
            if key == CONTROL_HEADER:
                try:
                    return cls(value)
                except ValueError:
                    return None
        return None


class Expect(msgspec.Struct, frozen=True):
    """split's promise to merge: request ``id`` of ``task`` has ``of`` parts."""

    id: str
    task: str
    of: Int

    def encode(self) -> bytes:
        return encode(self)

    @classmethod
    def decode(cls, data: bytes | None) -> Expect:
        expect = _EXPECT.decode(data)
        if expect.of < 1:
            raise DecodeError(f"expect: a request has at least one part, not {expect.of}")
        return expect


_EXPECT = Codec(Expect, "expect")


class Expiry(msgspec.Struct, frozen=True):
    """generate's sweep of the idle sessions of one ``prompts`` partition, in one control record.

    One record per partition and scan, not one per session: after a restart
    hundreds of sessions may fall due at once, and each record would take a
    place in a batch ahead of real prompts. Session ids are hex (keys are bytes).
    An expire record without ``sessions`` (an older member's) expires its own key.
    """

    sessions: list[str] = []

    def encode(self) -> bytes:
        return encode(self)

    @classmethod
    def of(cls, keys: list[bytes]) -> Expiry:
        return cls([key.hex() for key in keys])

    @classmethod
    def decode(cls, data: bytes | None) -> Expiry:
        return _EXPIRY.decode(data)

    def keys(self) -> list[bytes]:
        try:
            return [bytes.fromhex(key) for key in self.sessions]
        except ValueError as exc:
            raise DecodeError(f"expiry: a session id is not hex: {exc}") from exc


_EXPIRY = Codec(Expiry, "expiry")


DEAD_LETTER_PREFIX = "pipeline-dlq-"


@dataclass(frozen=True, slots=True)
class DeadLetterReason:
    """Why a record went to ``dead-letters``: added to its original headers, so it can be replayed."""

    stage: str
    code: str
    reason: str
    source: str  # topic[partition]@offset it was read from

    def to_list(self) -> HeaderList:
        return [
            (DEAD_LETTER_PREFIX + "stage", self.stage.encode()),
            (DEAD_LETTER_PREFIX + "code", self.code.encode()),
            (DEAD_LETTER_PREFIX + "reason", self.reason.encode("utf-8", "replace")),
            (DEAD_LETTER_PREFIX + "source", self.source.encode()),
        ]

    @classmethod
    def parse(cls, headers: HeaderList) -> DeadLetterReason | None:
        """The reason on a dead letter's headers; None if they carry none."""
        found = {k[len(DEAD_LETTER_PREFIX) :]: v.decode("utf-8", "replace") for k, v in headers
                 if k.startswith(DEAD_LETTER_PREFIX)}  # fmt: skip
        if "stage" not in found or "code" not in found:
            return None
        return cls(found["stage"], found["code"], found.get("reason", ""), found.get("source", ""))

    @staticmethod
    def strip(headers: HeaderList) -> HeaderList:
        """The original headers of a dead letter, without the reason."""
        return [(k, v) for k, v in headers if not k.startswith(DEAD_LETTER_PREFIX)]
