"""Decoding helpers shared by every message type: one typed error, never a crash."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from pipeline.errors import DecodeError


def loads(data: bytes | None, what: str) -> dict[str, Any]:
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


def read_field(
    obj: Mapping[str, Any], name: str, kind: type | tuple[type, ...], what: str, *, required: bool = True
) -> Any:
    value = obj.get(name)
    if value is None:
        if required:
            raise DecodeError(f"{what}: missing field {name!r}")
        return None
    # bool is an int in Python; a JSON true is never a valid number here.
    if isinstance(value, bool) and kind is not bool:
        raise DecodeError(f"{what}: field {name!r} must be {kind_name(kind)}, got boolean")
    if not isinstance(value, kind):
        raise DecodeError(f"{what}: field {name!r} must be {kind_name(kind)}, got {type(value).__name__}")
    return value


def kind_name(kind: type | tuple[type, ...]) -> str:
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


def check_index(part: int, of: int, what: str) -> None:
    if of < 1 or not 0 <= part < of:
        raise DecodeError(f"{what}: part {part} of {of} is out of range")


def asdict(obj: Any) -> dict[str, Any]:
    """A slotted dataclass as a plain dict (dataclasses.asdict deep-copies; these values are plain JSON already)."""
    out: dict[str, Any] = {}
    for name in obj.__slots__:
        value = getattr(obj, name)
        if hasattr(value, "__slots__") and hasattr(value, "__dataclass_fields__"):
            value = asdict(value)
        out[name] = value
    return out
