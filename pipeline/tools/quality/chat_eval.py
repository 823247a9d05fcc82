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
  the prompt carries; never an earlier *reply*); the rule is
  :mod:`pipeline.tools.quality.claims`.
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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.settings import PROJECT_ROOT
from pipeline.tools.quality.claims import NUM, plain, ungrounded

DATA = PROJECT_ROOT / "pipeline" / "data"
SETS = {"heldout": DATA / "chat_eval_heldout.json", "tuning": DATA / "chat_eval_tuning.json"}
PARTS = ("english", "chinese", "conversations")
CRITERIA = ("right_entry", "facts", "grounded", "no_contradiction")
REPORTED = ("pass", "fallback", "retrieved")

_CJK = "\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uff00-\uffef"


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


def _base(text: str) -> str:
    """:func:`~pipeline.tools.quality.claims.plain`, whitespace collapsed."""
    return re.sub(r"\s+", " ", plain(text)).strip()


def normalise(text: str) -> str:
    """The form facts and contradiction patterns are matched in (the module's docstring lists the rules)."""
    text = _base(text).lower()
    text = re.sub(rf"(?<=[{_CJK}]) | (?=[{_CJK}])", "", text)
    text = re.sub(r"\s*(?:›|»|→|->|>)\s*", " > ", text)
    text = re.sub(rf"(?<=[{_CJK}]) > | > (?=[{_CJK}])", ">", text)
    text = re.sub(r"\b(\d{1,2})(?::00)?\s*([ap])\.?m\b\.?", r"\1 \2m", text)
    text = re.sub(rf"\b({NUM})\s*(?:dollars?|bucks|usd)\b", r"$\1", text)
    text = re.sub(rf"\busd\s*({NUM})", r"$\1", text)
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
