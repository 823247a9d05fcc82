"""What a reply states and whether its sources state it: the chat evaluation's grounding rule.

:func:`claims` finds every checkable statement in a text; :func:`ungrounded`
lists those of a reply that no source states (the ``grounded`` criterion of
:func:`pipeline.tools.quality.chat_eval.score`, where the sources are the
retrieved entries' answer texts and the customer's messages). The rule:
e-mail and web addresses match exactly (lower case); phone numbers by their
last 10 digits; a menu path (``Account > Orders``) must be a run of a
source's path, segment by segment; a time of day by hour and minute (with
am/pm, or 上午/下午/晚上, when the reply says it); a price (``$4.95``,
``4.95 dollars``, ``4.95 美元``) and a percentage by value against the
sources' prices and percentages; a quantity with a unit (``3-5 business
days``: 3 and 5 days; ``two weeks``; ``an hour``; ``1-year``; ``60 分钟``)
by value and unit against the sources' quantities, where a source's quantity
also stands for its equivalents (60 minutes = 1 hour, 7 days = 1 week,
12 months = 1 year, 24 hours = 1 day); any other number by value against
every number the sources state. Ranges ("3-5", "3–5", "3 to 5", "3 到 5")
give both ends the unit. Number words count before a unit ("two weeks"),
list markers at the start of a line ("1. ") do not count.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

_DASHES = dict.fromkeys(map(ord, "\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63\uff0d"), "-")
_QUOTES = {ord("\u2018"): "'", ord("\u2019"): "'", ord("\u201c"): '"', ord("\u201d"): '"', ord("\u00b4"): "'"}
NUM = r"\d+(?:\.\d+)?"


def plain(text: str) -> str:
    """NFKC, curly quotes and dashes made plain (case and lines kept)."""
    return unicodedata.normalize("NFKC", text).translate(_DASHES).translate(_QUOTES)


_WORDS = {
    "a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "fourteen": 14, "fifteen": 15, "twenty": 20,
    "twenty-four": 24, "thirty": 30, "forty": 40, "forty-eight": 48, "fifty": 50, "sixty": 60, "ninety": 90,
    "hundred": 100,
}  # fmt: skip
_UNITS = [
    (r"(?:business |working )?days?|个工作日|工作日|天", "day"),
    (r"weeks?|个星期|星期|周", "week"),
    (r"months?|个月", "month"),
    (r"years?|年", "year"),
    (r"hours?|hrs?|个小时|小时", "hour"),
    (r"minutes?|mins?|分钟", "minute"),
    (r"points?|分", "point"),
]
_UNIT_RE = "|".join(f"(?P<u{i}>{pattern})" for i, (pattern, _) in enumerate(_UNITS))
_UNIT_WORDS = r"(?:business |working )?(?:day|week|month|year|hour|minute|point)s?\b"
_EQUIVALENT = {"minute": ("hour", 60), "hour": ("day", 24), "day": ("week", 7), "month": ("year", 12)}

Claim = tuple[str, Any]  # (kind, value): ("email", "a@b.c"), ("quantity", (3.0, "day")), ("number", 3.0), ...


def claims(text: str) -> list[tuple[Claim, str]]:
    """Every checkable statement in ``text``: (claim, the text that stated it)."""
    text = plain(text)
    found: list[tuple[Claim, str]] = []

    def take(pattern: str, make: Any, flags: int = re.IGNORECASE) -> None:
        nonlocal text

        def one(m: re.Match[str]) -> str:
            for claim in make(m):
                found.append((claim, m.group(0).strip()))
            return " ; "

        text = re.sub(pattern, one, text, flags=flags)

    take(r"(?m)^[ \t]*\d{1,2}[.)](?=\s)", lambda m: [])  # list markers ("1. ", "2) ") state nothing
    take(r"[\w.%+-]+@[\w-]+(?:\.[\w-]+)+", lambda m: [("email", m.group(0).lower().rstrip("."))])
    take(r"\b(?:https?://|www\.)[^\s,;)]+", lambda m: [("url", m.group(0).lower().rstrip("./"))])
    take(r"(?<!\d)(?:\+?1[-. ]?)?\(?\d{3}\)?[-. ]?\d{3}[-. ]\d{4}(?!\d)",
         lambda m: [("phone", re.sub(r"\D", "", m.group(0))[-10:])])  # fmt: skip
    take(r"[\w'-]+(?:[ ]*(?:>|›|»|→|->)[ ]*[\w'-]+)+", _path)
    take(r"(?:(上午|早上|中午|下午|晚上)\s*)?(\d{1,2})(?::(\d{2}))?\s*点(?:(\d{1,2})分|半)?", _zh_time)
    take(r"\b(\d{1,2})(?::(\d{2}))?\s*([ap])\.?\s?m\b\.?", _time)
    take(r"(?<![\d:])(\d{1,2}):(\d{2})(?![\d:])", lambda m: [("time", (int(m.group(1)) % 12, int(m.group(2)), None))])
    take(rf"\$\s?({NUM})|(?:usd|us\$)\s?({NUM})", lambda m: [("price", float(m.group(1) or m.group(2)))])
    take(rf"({NUM})\s*(?:-|to|到|至|~)\s*({NUM})\s*(?:dollars?|bucks|usd|美元|元)",
         lambda m: [("price", float(m.group(1))), ("price", float(m.group(2)))])  # fmt: skip
    take(rf"({NUM})\s*(?:dollars?|bucks|usd|美元|元)", lambda m: [("price", float(m.group(1)))])
    take(rf"({NUM})\s*(?:%|percent\b|per cent\b)", lambda m: [("percent", float(m.group(1)))])
    words = "|".join(sorted(map(re.escape, _WORDS), key=len, reverse=True))
    text = re.sub(rf"\b({words})(?=[\s-]+{_UNIT_WORDS})", lambda m: str(_WORDS[m.group(1).lower()]), text,
                  flags=re.IGNORECASE)  # fmt: skip
    take(rf"({NUM})(?:\s*(?:-|to|and|到|至|~)\s*({NUM}))?\s*-?\s*(?:{_UNIT_RE})(?![a-z])", _quantity)
    take(r"(?<![A-Za-z_\d.])\d+(?:[.,]\d+)*(?:st|nd|rd|th)?(?![A-Za-z])",
         lambda m: [("number", float(re.sub(r"[^\d.]", "", m.group(0).replace(",", ""))))])  # fmt: skip
    return found


def _path(m: re.Match[str]) -> list[Claim]:
    segments = tuple(s.strip(" -'").lower() for s in re.split(r"\s*(?:->|>|›|»|→)\s*", m.group(0)))
    if any(s.replace(".", "").isdigit() for s in segments):
        return []  # "orders > 50" is a comparison, not a menu; its numbers are left to the number rules
    return [("path", segments)]


def _time(m: re.Match[str]) -> list[Claim]:
    hour, minute = int(m.group(1)) % 12, int(m.group(2) or 0)
    return [("time", (hour + (12 if m.group(3).lower() == "p" else 0), minute, True))]


def _zh_time(m: re.Match[str]) -> list[Claim]:
    hour, minute = int(m.group(2)) % 12, int(m.group(3) or m.group(4) or (30 if m.group(0).endswith("半") else 0))
    if m.group(1) is None:
        return [("time", (hour, minute, None))]
    return [("time", (hour + (12 if m.group(1) in ("下午", "晚上") else 0), minute, True))]


def _quantity(m: re.Match[str]) -> list[Claim]:
    unit = next(_UNITS[int(k[1:])][1] for k, v in m.groupdict().items() if v is not None)
    values = [float(m.group(1))] + ([float(m.group(2))] if m.group(2) else [])
    return [("quantity", (v, unit)) for v in values]


@dataclass
class Sources:
    """What the sources state, ready to check a reply's claims against."""

    exact: set[Claim] = field(default_factory=set)
    paths: list[tuple[str, ...]] = field(default_factory=list)
    times: set[tuple[int, int]] = field(default_factory=set)
    numbers: set[float] = field(default_factory=set)

    @classmethod
    def of(cls, texts: Iterable[str]) -> Sources:
        sources = cls()
        for text in texts:
            for (kind, value), _ in claims(text):
                sources.add(kind, value)
        return sources

    def add(self, kind: str, value: Any) -> None:
        if kind == "path":
            self.paths.append(value)
        elif kind == "time":
            self.times.add((value[0], value[1]))
            self.numbers.add(float(value[0] % 12 or 12))
        elif kind == "quantity":
            amount, unit = value
            self.numbers.add(amount)
            for same in _equivalents(amount, unit):
                self.exact.add(("quantity", same))
        else:
            self.exact.add((kind, value))
            if kind in ("price", "percent", "number"):
                self.numbers.add(value)

    def states(self, claim: Claim) -> bool:
        kind, value = claim
        if kind == "path":
            return any(_runs_in(value, path) for path in self.paths)
        if kind == "time":
            hour, minute, known = value
            if known:
                return (hour, minute) in self.times
            return any(h % 12 == hour % 12 and m == minute for h, m in self.times)
        if kind == "number":
            return value in self.numbers
        return claim in self.exact


def _equivalents(amount: float, unit: str) -> set[tuple[float, str]]:
    out = {(amount, unit)}
    for small, (big, factor) in _EQUIVALENT.items():
        for a, u in list(out):
            if u == small and (a / factor).is_integer():
                out.add((a / factor, big))
    for small, (big, factor) in reversed(_EQUIVALENT.items()):
        for a, u in list(out):
            if u == big:
                out.add((a * factor, small))
    return out


def _runs_in(segments: tuple[str, ...], path: tuple[str, ...]) -> bool:
    """``segments`` occur in ``path`` as a run; the first may end with, the last start with, a path segment."""
    n = len(segments)
    for i in range(len(path) - n + 1):
        window = path[i : i + n]
        inner = all(a == b for a, b in zip(segments[1:-1], window[1:-1], strict=True))
        if inner and segments[0].endswith(window[0]) and segments[-1].startswith(window[-1]):
            return True
    return False


def ungrounded(reply: str, sources: Iterable[str]) -> list[str]:
    """The reply's statements that no source states (empty: grounded)."""
    known = Sources.of(sources)
    return [shown for claim, shown in claims(reply) if not known.states(claim)]
