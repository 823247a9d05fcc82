"""The chat evaluation's sets and scorer: is a reply right, complete, grounded and free of contradictions?

Pure functions, no Kafka: ``pipeline eval --chat`` (:mod:`pipeline.commands.chat_eval`)
asks the running pipeline and scores each answer here; the unit tests score
hand-written replies.

**The sets** (``pipeline/data/chat_eval_heldout.json``, never tuned on, and
``chat_eval_tuning.json``) hold three parts: ``english`` and ``chinese``
questions, each asked in a fresh session, and two-turn ``conversations``,
asked in one session, in order. Every question (every turn) carries

* ``entries``: the knowledge-base entries a right reply draws on (all of them
  for a message that asks two things);
* ``facts``: groups of alternative strings; a correct reply contains one
  alternative of every group (matched after :func:`normalise`);
* ``contradicts``: regexes the normalised reply must not match.

**The criteria** of one reply (:func:`score`):

* ``right_entry``: every expected entry is among the answer's matched
  ``result["entries"]``;
* ``facts``: every fact group has an alternative in the reply (the customer's
  message quoted back in it does not count);
* ``grounded``: every number, price, time, percentage, phone number, e-mail
  address, web address and menu path the reply states is stated by a source:
  the retrieved entries' answer texts or the customer's message (in a
  conversation also the earlier turns' messages and retrieved entries, which
  the prompt carries; never an earlier *reply*). The rule (:func:`claims`):
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
* ``no_contradiction``: no ``contradicts`` pattern matches;
* ``fallback``: ``result["grounding"]["fallback"]`` (the generate stage
  replaced the whole reply by retrieved text); ``retrieved``:
  ``result["generated"] is False`` (the retrieved text is the reply by
  design, e.g. Chinese with an English-only model); both are reported, not
  judged;
* ``pass``: status ``ok`` and right_entry, facts, grounded and no_contradiction.

:func:`normalise` (facts and contradictions): Unicode NFKC, lower case,
curly quotes made straight, every dash (‐ ‑ ‒ – — −) made "-", whitespace
collapsed and dropped next to Chinese characters, numeric ranges written
"3-5" ("3 - 5", "3 to 5"), times "2 pm" ("2pm", "2:00 p.m."), prices
"$4.95" ("4.95 dollars", "USD 4.95", "$5.00" is "$5"), menu arrows
(› » → ->) and the spaces around them written " > ". A fact alternative
matches from a word start, and to a word end when it ends in a digit, so
"$50" is not found in "$500" and "neighbour" is found in "neighbours".
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.settings import PROJECT_ROOT

DATA = PROJECT_ROOT / "pipeline" / "data"
SETS = {"heldout": DATA / "chat_eval_heldout.json", "tuning": DATA / "chat_eval_tuning.json"}
PARTS = ("english", "chinese", "conversations")
CRITERIA = ("right_entry", "facts", "grounded", "no_contradiction")
REPORTED = ("pass", "fallback", "retrieved")

_CJK = "\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uff00-\uffef"
_DASHES = dict.fromkeys(map(ord, "\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63\uff0d"), "-")
_QUOTES = {ord("\u2018"): "'", ord("\u2019"): "'", ord("\u201c"): '"', ord("\u201d"): '"', ord("\u00b4"): "'"}
_NUM = r"\d+(?:\.\d+)?"


# -- the sets -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Question:
    """One message to send (a question, or one turn of a conversation) and what its reply must hold."""

    id: str
    text: str
    entries: tuple[str, ...]
    facts: tuple[tuple[str, ...], ...]
    contradicts: tuple[str, ...]


@dataclass(frozen=True)
class EvalSet:
    name: str
    english: list[Question]
    chinese: list[Question]
    conversations: list[tuple[str, list[Question]]]  # (id, turns in order)
    paraphrases: dict[str, str]

    def part(self, name: str) -> list[list[Question]]:
        """The part as the sessions to run: one question per session, or a conversation's turns."""
        if name == "conversations":
            return [turns for _, turns in self.conversations]
        return [[q] for q in getattr(self, name)]

    def questions(self) -> list[Question]:
        return [*self.english, *self.chinese, *(t for _, turns in self.conversations for t in turns)]


def _question(raw: Mapping[str, Any]) -> Question:
    for pattern in raw.get("contradicts", []):
        re.compile(pattern)  # a bad pattern fails at load, not mid-run
    return Question(
        id=str(raw["id"]),
        text=str(raw["text"]),
        entries=tuple(raw["entries"]),
        facts=tuple(tuple(group) for group in raw["facts"]),
        contradicts=tuple(raw.get("contradicts", [])),
    )


def load_set(name_or_path: str | Path) -> EvalSet:
    """``heldout``, ``tuning`` or the path of a file in their format."""
    path = SETS.get(str(name_or_path), Path(name_or_path))
    raw = json.loads(Path(path).read_text(encoding="utf-8"))
    name = str(name_or_path) if str(name_or_path) in SETS else Path(path).stem
    return EvalSet(
        name=name,
        english=[_question(q) for q in raw["english"]],
        chinese=[_question(q) for q in raw["chinese"]],
        conversations=[(str(c["id"]), [_question(t) for t in c["turns"]]) for c in raw["conversations"]],
        paraphrases=dict(raw.get("paraphrases", {})),
    )


def load_kbs(data: Path = DATA) -> dict[str, dict[str, str]]:
    """``{"en": {entry: answer}, "zh": {entry: answer}}`` from the shop's knowledge bases."""
    kbs = {}
    for lang, name in (("en", "faq_shop.json"), ("zh", "faq_shop_zh.json")):
        raw = json.loads((data / name).read_text(encoding="utf-8"))
        kbs[lang] = {str(e["id"]): str(e["answer"]) for e in raw["entries"]}
    return kbs


# -- normalising and facts ------------------------------------------------------------------


def _plain(text: str) -> str:
    """NFKC, curly quotes and dashes made plain (case and lines kept)."""
    return unicodedata.normalize("NFKC", text).translate(_DASHES).translate(_QUOTES)


def _base(text: str) -> str:
    """:func:`_plain`, whitespace collapsed."""
    return re.sub(r"\s+", " ", _plain(text)).strip()


def normalise(text: str) -> str:
    """The form facts and contradiction patterns are matched in (the module's docstring lists the rules)."""
    text = _base(text).lower()
    text = re.sub(rf"(?<=[{_CJK}]) | (?=[{_CJK}])", "", text)
    text = re.sub(r"\s*(?:›|»|→|->|>)\s*", " > ", text)
    text = re.sub(rf"(?<=[{_CJK}]) > | > (?=[{_CJK}])", ">", text)
    text = re.sub(r"\b(\d{1,2})(?::00)?\s*([ap])\.?m\b\.?", r"\1 \2m", text)
    text = re.sub(rf"\b({_NUM})\s*(?:dollars?|bucks|usd)\b", r"$\1", text)
    text = re.sub(rf"\busd\s*({_NUM})", r"$\1", text)
    text = re.sub(r"\$\s+(?=\d)", "$", text)
    text = re.sub(r"\$(\d+)\.00\b", r"$\1", text)
    text = re.sub(r"(?<=\d) ?(?:-|to) ?(?=\$?\d)", "-", text)
    return text


def _fact_pattern(alternative: str) -> re.Pattern[str]:
    text = normalise(alternative)
    start = r"(?<![a-z0-9])" if text[:1].isascii() and text[:1].isalnum() else ""
    end = r"(?![0-9])" if text[-1:].isdigit() else ""
    return re.compile(start + re.escape(text) + end)


def fact_found(group: Iterable[str], normalised_reply: str) -> bool:
    """Whether one alternative of the group is in the (normalised) reply."""
    return any(_fact_pattern(a).search(normalised_reply) for a in group)


# -- grounding ------------------------------------------------------------------------------

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
    text = _plain(text)
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
    take(rf"\$\s?({_NUM})|(?:usd|us\$)\s?({_NUM})", lambda m: [("price", float(m.group(1) or m.group(2)))])
    take(rf"({_NUM})\s*(?:-|to|到|至|~)\s*({_NUM})\s*(?:dollars?|bucks|usd|美元|元)",
         lambda m: [("price", float(m.group(1))), ("price", float(m.group(2)))])  # fmt: skip
    take(rf"({_NUM})\s*(?:dollars?|bucks|usd|美元|元)", lambda m: [("price", float(m.group(1)))])
    take(rf"({_NUM})\s*(?:%|percent\b|per cent\b)", lambda m: [("percent", float(m.group(1)))])
    words = "|".join(sorted(map(re.escape, _WORDS), key=len, reverse=True))
    text = re.sub(rf"\b({words})(?=[\s-]+{_UNIT_WORDS})", lambda m: str(_WORDS[m.group(1).lower()]), text,
                  flags=re.IGNORECASE)  # fmt: skip
    take(rf"({_NUM})(?:\s*(?:-|to|and|到|至|~)\s*({_NUM}))?\s*-?\s*(?:{_UNIT_RE})(?![a-z])", _quantity)
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


# -- one reply ------------------------------------------------------------------------------


@dataclass
class Score:
    """The criteria of one reply, and why any failed."""

    id: str
    status: str
    right_entry: bool
    facts: bool
    grounded: bool
    no_contradiction: bool
    fallback: bool
    retrieved: bool
    missing_entries: list[str] = field(default_factory=list)
    missing_facts: list[list[str]] = field(default_factory=list)
    ungrounded: list[str] = field(default_factory=list)
    contradictions: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.status == "ok" and self.right_entry and self.facts and self.grounded and self.no_contradiction

    def failed(self) -> list[str]:
        """The names of the criteria it failed (``status`` when the answer was not ok)."""
        names = [] if self.status == "ok" else [f"status={self.status}"]
        return names + [c for c in CRITERIA if not getattr(self, c)]

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "status": self.status, "pass": self.passed,
            **{c: getattr(self, c) for c in (*CRITERIA, "fallback", "retrieved")},
            "missing_entries": self.missing_entries, "missing_facts": self.missing_facts,
            "ungrounded": self.ungrounded, "contradictions": self.contradictions,
        }  # fmt: skip


def retrieved_texts(result: Mapping[str, Any], kbs: Mapping[str, Mapping[str, str]] | None = None) -> list[str]:
    """The answer texts of the entries the answer retrieved (from the KBs by id where an entry lacks one)."""
    texts = []
    for entry in result.get("entries") or []:
        text = entry.get("answer")
        if not text and kbs:
            text = next((kb[entry["entry"]] for kb in kbs.values() if entry.get("entry") in kb), "")
        if text:
            texts.append(str(text))
    return texts


def score(
    question: Question,
    status: str,
    result: Mapping[str, Any] | None,
    kbs: Mapping[str, Mapping[str, str]] | None = None,
    earlier: Sequence[tuple[str, Mapping[str, Any] | None]] = (),
) -> Score:
    """Score one answer to ``question``; ``earlier``: the conversation's earlier (message, result) pairs."""
    result = result or {}
    reply = str(result.get("reply") or "")
    got = {str(e.get("entry")) for e in result.get("entries") or [] if e.get("matched", True)}
    missing_entries = [e for e in question.entries if e not in got]
    said = normalise(reply)
    # A reply that quotes the message back ("no answer found for '...'") does not state its words as facts.
    answered = said.replace(normalise(question.text), " ; ") if question.text.strip() else said
    missing_facts = [list(group) for group in question.facts if not fact_found(group, answered)]
    sources = [question.text, *retrieved_texts(result, kbs)]
    for message, before in earlier:
        sources += [message, *retrieved_texts(before or {}, kbs)]
    contradictions = [p for p in question.contradicts if re.search(p, said, flags=re.IGNORECASE)]
    wrong = ungrounded(reply, sources)
    return Score(
        id=question.id,
        status=status,
        right_entry=not missing_entries,
        facts=bool(reply) and not missing_facts,
        grounded=not wrong,
        no_contradiction=not contradictions,
        fallback=bool((result.get("grounding") or {}).get("fallback", False)),
        retrieved=result.get("generated") is False,
        missing_entries=missing_entries,
        missing_facts=missing_facts,
        ungrounded=wrong,
        contradictions=contradictions,
    )


# -- a part's figures -----------------------------------------------------------------------


@dataclass
class Tally:
    """A part's counts and timings."""

    n: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys((*CRITERIA, *REPORTED), 0))
    first_token_ms: list[float] = field(default_factory=list)
    tokens_per_s: list[float] = field(default_factory=list)

    def add(self, s: Score, result: Mapping[str, Any] | None) -> None:
        self.n += 1
        for name in (*CRITERIA, "fallback", "retrieved"):
            self.counts[name] += bool(getattr(s, name))
        self.counts["pass"] += s.passed
        result = result or {}
        if isinstance(result.get("first_token_ms"), (int, float)):
            self.first_token_ms.append(float(result["first_token_ms"]))
        if isinstance(result.get("tokens_per_s"), (int, float)) and result.get("generated", True):
            self.tokens_per_s.append(float(result["tokens_per_s"]))

    def share(self, name: str) -> float:
        return self.counts[name] / self.n if self.n else 0.0


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100) by linear interpolation; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)
