"""The codec every message type shares: msgspec decodes and validates, one typed error, never a crash.

Each message is a :class:`msgspec.Struct` declared once; :class:`Codec` decodes
its JSON with a typed :class:`msgspec.json.Decoder` (wrong shape or type is
caught while parsing) and :func:`encode` writes it. Whatever msgspec rejects
comes out as :class:`~pipeline.errors.DecodeError` naming the message type and
the field, so a stage turns any bad record into an error answer.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Generic, TypeVar

import msgspec
import orjson

from pipeline.errors import DecodeError

T = TypeVar("T")

Int = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
"""An integer field: one that fits a signed 64-bit integer (a bigger one is bad bytes, not a number)."""


def _plain(obj: Any) -> Any:
    """What msgspec cannot encode itself: numpy arrays and scalars (model outputs) as plain values."""
    tolist = getattr(obj, "tolist", None)
    if tolist is None:
        raise NotImplementedError(f"cannot encode {type(obj).__name__}")
    return tolist()


_ENCODER = msgspec.json.Encoder(enc_hook=_plain)


def encode(message: Any) -> bytes:
    """A message's JSON bytes (numpy values as plain numbers and lists)."""
    return _ENCODER.encode(message)


class Codec(Generic[T]):
    """The typed decoder of one message type; ``what`` names the type in errors."""

    __slots__ = ("decoder", "what")

    def __init__(self, kind: type[T], what: str) -> None:
        self.decoder = msgspec.json.Decoder(kind)
        self.what = what

    def decode(self, data: bytes | None) -> T:
        if data is None:
            raise DecodeError(f"{self.what}: empty value")
        try:
            return self.decoder.decode(data)
        except msgspec.ValidationError as exc:
            raise DecodeError(explain(self.what, str(exc))) from exc
        except msgspec.DecodeError as exc:
            raise DecodeError(f"{self.what}: not valid UTF-8 JSON: {exc}") from exc
        except RecursionError as exc:  # msgspec's answer to JSON nested thousands deep
            raise DecodeError(f"{self.what}: not valid UTF-8 JSON: nested too deep") from exc


_MISSING = re.compile(r"Object missing required field `(?P<field>[^`]+)`(?: - at `\$(?P<at>[^`]*)`)?")
_EXPECTED = re.compile(r"Expected `(?P<expected>[^`]+)`, got `(?P<got>[^`]+)`(?: - at `\$(?P<at>[^`]*)`)?")
_AT = re.compile(r"(?P<error>.*) - at `\$(?P<at>[^`]*)`")
_KINDS = {"str": "a string", "int": "an integer", "float": "a number", "object": "an object",
          "array": "an array", "bool": "a boolean", "null": "null"}  # fmt: skip


def explain(what: str, error: str) -> str:
    """msgspec's validation message in the pipeline's words: the type, the field, what it must be."""
    m = _MISSING.fullmatch(error)
    if m:
        return f"{what}{m['at'] or ''}: missing field {m['field']!r}"
    m = _EXPECTED.fullmatch(error)
    if m:
        kinds = [k for k in m["expected"].split(" | ") if k != "null"] or ["null"]
        expected = " or ".join(_KINDS.get(k, k) for k in kinds)
        got = "boolean" if m["got"] == "bool" else m["got"]
        if not m["at"]:
            return f"{what}: expected a JSON {m['expected']}, got {got}"
        return f"{what}: field {m['at'].lstrip('.')!r} must be {expected}, got {got}"
    m = _AT.fullmatch(error)
    if m:
        return f"{what}: field {m['at'].lstrip('.')!r}: {m['error'][:1].lower()}{m['error'][1:]}"
    return f"{what}: {error}"


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


def check_index(part: int, of: int, what: str) -> None:
    if of < 1 or not 0 <= part < of:
        raise DecodeError(f"{what}: part {part} of {of} is out of range")
