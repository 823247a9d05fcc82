"""What a chat reply may state, and the check every written sentence passes before it streams.

A reply is grounded in the retrieved knowledge-base entries (the *facts*) and
the customer's own message. :class:`Grounds` reads them once per reply:

* the fact sentences, each with its content words and its negations;
* every number in them (``30``, ``3-5``, ``4.95``, ``1-800-555-0199``: the
  whole run and each of its digit groups), every e-mail address and every
  menu step (``Account > Orders``).

:meth:`Grounds.check` passes a sentence only when

1. **numbers, e-mail addresses and menu steps** in it all appear in the facts
   or the message (the logits processors of
   :mod:`pipeline.models.constraints` already keep digits to those numbers;
   this is the check that does not trust the decoder);
2. it is **supported**: at least ``SUPPORT`` of its content words (stemmed,
   stop words and a few courtesy words aside) occur in the facts or the
   message, and one fact sentence shares a content word with it;
3. there is **no negation flip**: every negation it makes ("can't return")
   is made by the facts or the message too, and it does not drop the
   negation of the fact sentence it draws on ("can't be edited" → "can be
   edited");
4. it is **not a repeat** of a sentence already in the reply.

A sentence that fails 1–3 is replaced by :meth:`Grounds.replacement`, the
fact sentence it is closest to; a repeat is dropped. Word overlap, not the
sentence encoder, decides support: it is exact about numbers and negations,
costs microseconds on generate's thread, and needs no model in the stage.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from pipeline.tasks.faq.retrieval import STOP_WORDS

# Content words a sentence needs no fact for: courtesy and the shop's own frame.
COURTESY = frozenset(
    {
        "happy", "glad", "sorry", "hope", "help", "helps", "helped", "assist", "welcome", "sure", "anything",
        "else", "let", "know", "question", "questions", "great", "thank", "thanks", "feel", "free", "reach", "ask",
        "hesitate", "course", "certainly", "absolutely", "yes", "ok", "okay", "just", "one", "note", "need",
        "needs", "like", "want", "able", "way", "also", "still", "here", "more", "info", "information",
        "customer", "shop", "us", "were", "answer",
    }
)  # fmt: skip
NEGATIONS = frozenset(
    {
        "not", "no", "never", "cannot", "cant", "dont", "doesnt", "didnt", "wont", "isnt", "arent", "wasnt",
        "werent", "shouldnt", "wouldnt", "couldnt", "nor", "none",
    }
)  # fmt: skip
# Share of a sentence's content words that the facts or the message must contain.
SUPPORT = 0.75
# Words a later sentence of an entry must share with the question beyond the first's to lead instead.
LEAD_MARGIN = 2
# A sentence this similar to one already in the reply is a repeat.
REPEAT = 0.8

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
_NUMBER = re.compile(r"\d+(?:[.,:/\-–—]\d+)*")
_CUT_NUMBER = re.compile(r"\d[-–—/:](?!\d)")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_STEP = re.compile(r"([A-Za-z][\w&'-]*)\s*>\s*([A-Za-z][\w&'-]*)")
# Where a fact text is cut into sentences: after . ! ? before the next one's first letter or quote.
_FACT_BREAK = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"“(])|(?<=[。！？])\s*")


def stem(word: str) -> str:
    for suffix in ("ing", "ed", "es", "s"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def words(text: str) -> list[str]:
    """Lower-cased words, apostrophes folded ("can't" → "cant"); Chinese as its characters' bigrams."""
    out: list[str] = []
    for run in _WORD.findall(text.lower().replace("’", "'")):
        if run[0].isascii():
            out.append(run.replace("'", ""))
        else:  # a run of CJK characters: its bigrams (a lone character alone)
            out.extend([run[i : i + 2] for i in range(len(run) - 1)] or [run])
    return out


def content(text: str) -> frozenset[str]:
    """The stems of the words that say something: not stop words, not negations."""
    return frozenset(stem(w) for w in words(text) if w not in STOP_WORDS and w not in NEGATIONS and len(w) > 1)


def negations(text: str) -> frozenset[tuple[str, str]]:
    """Each negation with the content word after it: ("cant", "return")."""
    ws = words(text)
    pairs = set()
    for i, w in enumerate(ws):
        if w in NEGATIONS:
            after = next((stem(x) for x in ws[i + 1 : i + 4] if x not in STOP_WORDS and x not in NEGATIONS), "")
            pairs.add(("not", after))  # every negation word counts as one: "don't" and "not" say the same
    return frozenset(pairs)


def numbers(text: str) -> set[str]:
    """Each number as written (dashes folded to '-') and each of its digit groups."""
    found: set[str] = set()
    for run in _NUMBER.findall(text):
        run = re.sub("[–—]", "-", run)
        found.add(run)
        found.update(re.findall(r"\d+", run))
    return found


def steps(text: str) -> set[tuple[str, str]]:
    return {(a.lower(), b.lower()) for a, b in _STEP.findall(text)}


def fact_sentences(text: str) -> list[str]:
    return [s.strip() for s in _FACT_BREAK.split(text.strip()) if s.strip()]


@dataclass(frozen=True)
class Fact:
    """One sentence of a retrieved entry's answer."""

    text: str
    entry: str
    index: int  # its place in the entry's answer
    words: frozenset[str]
    negations: frozenset[tuple[str, str]]


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str = ""  # why not: "number 14", "unsupported", "negation", "repeat", ...
    closest: Fact | None = None


@dataclass
class Grounds:
    """The facts of one reply (entries' answers) and the customer's message."""

    facts: list[Fact]
    message: str
    numbers: set[str] = field(default_factory=set)
    emails: set[str] = field(default_factory=set)
    steps: set[tuple[str, str]] = field(default_factory=set)
    words: set[str] = field(default_factory=set)
    negations: set[tuple[str, str]] = field(default_factory=set)

    @classmethod
    def of(cls, entries: Iterable[tuple[str, str]], message: str) -> Grounds:
        """From ``(entry id, answer text)`` pairs (each entry once) and the message."""
        facts: list[Fact] = []
        seen: set[str] = set()
        for entry, answer in entries:
            if entry in seen or not answer:
                continue
            seen.add(entry)
            for index, sentence in enumerate(fact_sentences(answer)):
                facts.append(Fact(sentence, entry, index, content(sentence), negations(sentence)))
        grounds = cls(facts, message)
        for text in [message, *(f.text for f in facts)]:
            grounds.numbers |= numbers(text)
            grounds.emails |= {e.lower() for e in _EMAIL.findall(text)}
            grounds.steps |= steps(text)
            grounds.words |= content(text)
            grounds.negations |= negations(text)
        return grounds

    @property
    def text(self) -> str:
        """The facts as one text (what the decoder may copy from)."""
        return " ".join(f.text for f in self.facts)

    def closest(self, text: str, among: Sequence[Fact] | None = None) -> Fact | None:
        """The fact sentence sharing the most content words with ``text`` (the earlier one on a tie)."""
        mine = content(text)
        best: tuple[float, int, Fact] | None = None
        for fact in among if among is not None else self.facts:
            shared = len(mine & fact.words)
            score = shared / (len(fact.words) ** 0.5 or 1.0)
            key = (score, -fact.index, fact)
            if best is None or key[:2] > best[:2]:
                best = key
        return best[2] if best is not None and best[0] > 0 else None

    def lead(self, question: str, entries: Sequence[str]) -> Fact | None:
        """The sentence that best answers ``question`` among ``entries``' (in order of trust): the reply's first words.

        Entries put the answer first, so an entry's first sentence leads unless
        a later one shares at least ``LEAD_MARGIN`` more of the question's
        content words; across entries, the one sharing the most words wins,
        the earlier entry on a tie.
        """
        asked = content(question) - COURTESY
        best: tuple[int, int, Fact] | None = None
        for rank, entry in enumerate(entries):
            mine = [f for f in self.facts if f.entry == entry]
            if not mine:
                continue
            shared = [len(asked & f.words) for f in mine]
            # A later sentence needs LEAD_MARGIN more shared words than the first; ties go to the earlier.
            pick = max(range(len(mine)), key=lambda i: (shared[i] - (LEAD_MARGIN - 1 if i else 0), -i))
            key = (shared[pick], -rank, mine[pick])
            if best is None or key[:2] > best[:2]:
                best = key
        return best[2] if best is not None else None

    def check(self, sentence: str, earlier: Sequence[str] = ()) -> Verdict:
        """Whether ``sentence`` may be streamed (see the module docstring)."""
        closest = self.closest(sentence)
        if _CUT_NUMBER.search(sentence):
            return Verdict(False, "number cut off", closest)
        for number in _NUMBER.findall(sentence):
            number = re.sub("[–—]", "-", number)
            if number not in self.numbers:
                return Verdict(False, f"number {number}", closest)
        for email in _EMAIL.findall(sentence):
            if email.lower() not in self.emails:
                return Verdict(False, f"e-mail {email}", closest)
        for step in steps(sentence):
            if step not in self.steps:
                return Verdict(False, f"menu step {' > '.join(step)}", closest)
        mine = content(sentence)
        if not mine:
            return Verdict(False, "empty", closest)  # "P.S.", "A.": nothing to say
        claims = mine - COURTESY
        if claims:
            grounded = sum(1 for w in claims if w in self.words)
            if closest is None or grounded / len(claims) < SUPPORT:
                return Verdict(False, "unsupported", closest)
        for pair in negations(sentence):
            if pair not in self.negations:
                return Verdict(False, f"negation {' '.join(pair)}", closest)
        dropped = closest is not None and closest.negations and not negations(sentence)
        if dropped and any(word in mine for _, word in closest.negations if word):  # type: ignore[union-attr]
            return Verdict(False, "negation dropped", closest)
        for before in earlier:
            theirs = content(before)
            if mine and len(mine & theirs) / len(mine) >= REPEAT:
                return Verdict(False, "repeat", closest)
        return Verdict(True, closest=closest)

    def replacement(self, verdict: Verdict, used: Iterable[str]) -> Fact | None:
        """The fact sentence that stands in for a failed one: the closest not already in the reply.

        When it shares no word with any fact (or the closest is in the reply
        already), the first fact sentence the reply does not have yet.
        """
        taken = set(used)
        if verdict.closest is not None and verdict.closest.text not in taken:
            return verdict.closest
        return next((f for f in self.facts if f.text not in taken), None)


_BOUNDARY = re.compile(r"([.!?]+[\"'”’)]*)(\s+)|([。！？]+[”’」』）]*)()")


@dataclass
class CheckedStream:
    """A reply as it is written: the lead (fact sentences) first, then the model's sentences, each checked.

    :meth:`push` takes the model's text as it comes and returns what may be
    streamed now (whole checked sentences, or a replacement) and whether the
    model should go on: it stops after a replacement (its context has gone
    wrong) and after ``max_sentences`` sentences of its own.
    """

    grounds: Grounds
    lead: str
    max_sentences: int = 2
    pending: str = ""
    text: str = ""  # everything released, the lead included
    written: int = 0  # model sentences checked
    kept: int = 0  # ... that passed and were streamed as written
    stated: int = 0  # ... of those, the ones that state something (not only courtesy)
    replaced: int = 0
    dropped: int = 0
    rejected: list[dict[str, str]] = field(default_factory=list)  # what the model wrote that failed, and why
    done: bool = False

    def __post_init__(self) -> None:
        self.text = self.lead
        self.sentences = fact_sentences(self.lead)

    def push(self, delta: str) -> tuple[str, bool]:
        """(text to stream now, whether the model should go on)."""
        if self.done:
            return "", False
        self.pending += delta
        out = ""
        while not self.done:
            match = _BOUNDARY.search(self.pending)
            newline = self.pending.find("\n")
            if match is None and newline < 0:
                break
            end = (match.end(1) if match.group(1) else match.end(3)) if match is not None else newline
            if newline >= 0 and (match is None or newline < match.start()):
                end = newline
            sentence, self.pending = self.pending[:end], self.pending[end:].lstrip()
            out += self._sentence(sentence)
        return out, not self.done

    def finish(self, complete: bool) -> str:
        """The rest at the end of the sequence: checked if it is a whole sentence, dropped if it was cut off."""
        rest, self.pending = self.pending.strip(), ""
        if not rest or self.done:
            return ""
        if not complete and rest[-1] not in ".!?\"'”’)":
            self.dropped += 1
            self.rejected.append({"sentence": rest, "reason": "cut off"})
            return ""
        return self._sentence(rest)

    def _sentence(self, sentence: str) -> str:
        sentence = " ".join(sentence.split())
        if not any(ch.isalnum() for ch in sentence):
            return ""
        self.written += 1
        verdict = self.grounds.check(sentence, self.sentences)
        if verdict.ok:
            self.kept += 1
            self.stated += bool(content(sentence) - COURTESY)
            if self.kept >= self.max_sentences:
                self.done = True
            return self._release(sentence)
        self.rejected.append({"sentence": sentence, "reason": verdict.reason})
        if verdict.reason in ("repeat", "empty"):
            self.dropped += 1
            return ""
        self.done = True  # the model's context has gone wrong: a fact closes the reply
        stand_in = self.grounds.replacement(verdict, self.sentences)
        if stand_in is None:
            self.dropped += 1
            return ""
        self.replaced += 1
        return self._release(stand_in.text)

    def _release(self, sentence: str) -> str:
        spaced = self.text and not _is_cjk(self.text[-1]) and not _is_cjk(sentence[0])
        piece = (" " if spaced else "") + sentence
        self.text += piece
        self.sentences.append(sentence)
        return piece

    def report(self) -> dict[str, object]:
        """What the final answer says of the check (``grounding``)."""
        return {
            "lead": len(fact_sentences(self.lead)),
            "sentences": self.written,
            "kept": self.kept,
            "replaced": self.replaced,
            "dropped": self.dropped,
            # Nothing the model stated is in the reply: it is the facts' own sentences.
            "fallback": self.stated == 0,
            "rejected": self.rejected,
        }


def _is_cjk(ch: str) -> bool:
    return "\u3000" <= ch <= "\u9fff" or "\uf900" <= ch <= "\uffef"
