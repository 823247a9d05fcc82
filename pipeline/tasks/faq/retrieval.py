"""faq retrieval: score every knowledge-base entry from all it knows, dense and lexical, fused.

One nearest question is brittle: a customer's word the knowledge base never
uses ("voucher", "box", "profile") or a neighbour entry that shares the words
but not the intent picks the wrong entry. So an entry's score fuses four
signals, each in [0, 1] or a cosine:

* **questions** (dense): the best cosine between the message and the entry's
  questions (the sentence encoder; the original scorer);
* **answer** (dense): the cosine with the entry's answer text, which names
  things the questions do not ("Account > Profile", "parcel", "PIN");
* **title** (dense): the cosine with the entry's title line, its id's words and
  its keywords ("gift cards: gift voucher, gift certificate, ..."), so the
  words customers use for a thing reach the encoder even when no question
  says them;
* **lexical**: BM25 (the ``bm25s`` library) of the message against one
  document per entry (id words, questions, keywords), saturated as
  ``s / (s + k)`` so it keeps its absolute size (a message that shares one
  rare word with an entry scores low however the other entries do). Latin
  words are lower-cased, stop words dropped and lightly stemmed, and each
  word also gives its character trigrams, so "refnd" still meets "refund";
  Chinese (and any CJK text) is read as characters and bigrams, so the same
  scorer serves a Chinese knowledge base. The knowledge base's synonym
  groups (``order, parcel, package, box``) are read as their first word on
  both sides, so "parcel" neither misses an entry that says "order" nor pulls
  towards the one entry whose text happens to say "parcel"; an entry's
  regions and the places in them join its document, so "Ireland" meets the
  entry that covers the EU.

``fused = wq·questions + wa·answer + wt·title + wl·lexical`` with
``wq = 1 - wa - wt - wl``. The weights, the "no good match" threshold and the
unsure margin are calibrated on the tuning set only
(:func:`pipeline.tools.quality.evaluation.calibrate`, ``pipeline eval --calibrate``); the
defaults in :class:`~pipeline.settings.Settings` are its result for the
shipped shop and MiniLM, and docs/models.md shows the numbers.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType

import numpy as np

_WORD = re.compile(r"[a-z0-9]+|[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff\uac00-\ud7af]+")
# Words that say nothing about which entry is meant.
_STOP = """
a an and are as at be but by can could did do does for from get got have how i if in is it its me my no
not of on or our please so that the there this to u up was we what when where which who why will with
would you your im ive dont cant
wheres whats hows whos thats theres heres isnt arent doesnt didnt havent hasnt wont wouldnt couldnt
ill id youre theyre weve youve also hi hello hey thanks thank pls plz
"""
STOP_WORDS = frozenset(_STOP.split())
# BM25 saturation: a lexical score of k gives 0.5.
LEXICAL_HALF = 10.0


class Synonyms:
    """Groups of words or phrases read as one: each member is replaced by its group's first, whole words only."""

    def __init__(self, groups: Sequence[Sequence[str]] = ()) -> None:
        self.canonical = {member.lower(): group[0].lower() for group in groups for member in group[1:]}
        # Longest first, so "gift certificate" wins over "gift".
        alternatives = sorted(self.canonical, key=len, reverse=True)
        self.pattern = re.compile(r"\b(?:" + "|".join(map(re.escape, alternatives)) + r")\b") if alternatives else None

    def __call__(self, text: str) -> str:
        """``text`` (lowercased, apostrophes dropped) with every synonym read as its group's first."""
        if self.pattern is None:
            return text
        return self.pattern.sub(lambda m: self.canonical[m.group(0)], text)


NO_SYNONYMS = Synonyms()


def tokens(text: str, synonyms: Synonyms = NO_SYNONYMS) -> list[str]:
    """Lexical tokens: stemmed Latin words and their character trigrams; CJK characters and their bigrams.

    Trigrams are marked (``~ref``) so they never collide with a word, and the
    word is padded (``#refund#``) so its start and end count. A synonym is
    read as its group's first word before any of that.
    """
    out: list[str] = []
    for run in _WORD.findall(synonyms(text.lower().replace("'", ""))):
        if not run[0].isascii():
            out.extend(run)
            out.extend(run[i : i + 2] for i in range(len(run) - 1))
        elif run not in STOP_WORDS:
            out.append(_stem(run))
            padded = f"#{run}#"
            out.extend("~" + padded[i : i + 3] for i in range(len(padded) - 2))
    return out


def _stem(word: str) -> str:
    for suffix in ("ing", "ed", "es", "s"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


@dataclass(frozen=True)
class Weights:
    """How much each signal counts; the rest goes to the best question's cosine."""

    answer: float = 0.0  # the dense score against the entry's answer text
    lexical: float = 0.0  # the saturated BM25 score
    title: float = 0.0  # the dense score against the entry's title line (id words and keywords)

    @property
    def questions(self) -> float:
        return 1.0 - self.answer - self.lexical - self.title


@dataclass(frozen=True)
class Signals:
    """Every signal for (messages, entries); ``rows`` is, per entry, its question that matched best."""

    questions: np.ndarray
    answer: np.ndarray
    title: np.ndarray
    lexical: np.ndarray
    rows: np.ndarray

    def fuse(self, weights: Weights) -> np.ndarray:
        """Entry scores, (messages, entries); a zero weight skips its signal."""
        fused = weights.questions * self.questions
        for weight, signal in ((weights.answer, self.answer), (weights.title, self.title),
                               (weights.lexical, self.lexical)):  # fmt: skip
            if weight:
                fused = fused + weight * signal
        return np.asarray(fused)


class Lexical:
    """BM25 over one document per knowledge-base entry.

    BM25 adds up one score per query token, so at start every token of the
    documents is scored alone (``bm25s``'s own ``get_scores``) into a
    (vocabulary, entries) table; a message's scores are then the sum of its
    tokens' rows, one numpy call instead of a pass through the library per
    message (a token no document has scores 0, as in the library).
    """

    def __init__(
        self, documents: Sequence[str], half: float = LEXICAL_HALF, synonyms: Sequence[Sequence[str]] = ()
    ) -> None:
        bm25s = import_bm25s()

        self.synonyms = Synonyms(synonyms)
        # A placeholder token keeps an empty document from breaking the index.
        tokenized = [tokens(d, self.synonyms) or ["\u2205"] for d in documents]
        bm25 = bm25s.BM25()
        bm25.index(tokenized, show_progress=False)
        self.vocabulary = {token: row for row, token in enumerate(sorted({t for d in tokenized for t in d}))}
        self.table = np.zeros((len(self.vocabulary), len(documents)))
        for token, row in self.vocabulary.items():
            self.table[row] = np.asarray(bm25.get_scores([token]), dtype=np.float64)
        self.size = len(documents)
        self.half = half

    def raw(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), entries) BM25 scores (0 for a text without known tokens)."""
        out = np.zeros((len(texts), self.size))
        for row, text in enumerate(texts):
            known = [self.vocabulary[t] for t in tokens(text, self.synonyms) if t in self.vocabulary]
            if known:
                out[row] = self.table[known].sum(axis=0)
        return out

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), entries) in [0, 1): BM25 saturated as ``s / (s + half)``."""
        raw = self.raw(texts)
        return np.asarray(raw / (raw + self.half))


def import_bm25s() -> ModuleType:
    """``bm25s`` on its numpy backend, never importing ``jax``.

    bm25s's package import (``bm25s/selection.py``) tries ``import jax.lax``
    and, where jax is installed (most GPU images), runs one ``top_k``: that
    makes a JAX client, which on a GPU host preallocates 75 % of the GPU in
    this process. With four infer members on one H200 the first took 105 GiB
    and the others failed ``cublasCreate`` (issue 19). The project uses only
    ``BM25.index`` and ``get_scores`` (numpy, scipy-free), so jax is hidden
    while bm25s loads: its ``import jax.lax`` raises ImportError, which bm25s
    catches, and it keeps the numpy path for the life of the process. The
    entry is restored afterwards, so code that wants jax can still import it.
    bm25s decides nowhere else (``BM25(backend="numpy")`` is its default).
    """
    loaded = sys.modules.get("bm25s")
    if loaded is not None:
        return loaded
    saved: dict[str, ModuleType] = {name: sys.modules[name] for name in ("jax", "jax.lax") if name in sys.modules}
    sys.modules["jax"] = None  # type: ignore[assignment]  # "import jax" now raises ImportError
    sys.modules.pop("jax.lax", None)
    try:
        import bm25s
    finally:
        del sys.modules["jax"]
        sys.modules.update(saved)
    return bm25s


def fuse(dense_questions: np.ndarray, dense_answer: np.ndarray, lexical: np.ndarray, weights: Weights) -> np.ndarray:
    """Entry scores from three signals (no title): ``Signals.fuse`` for callers that hold arrays."""
    zeros = np.zeros_like(dense_questions)
    return Signals(dense_questions, dense_answer, zeros, lexical, zeros).fuse(weights)


def best_per_entry(similarity: np.ndarray, owner: np.ndarray, entries: int) -> tuple[np.ndarray, np.ndarray]:
    """From (messages, questions) cosines: each entry's best cosine and which of its questions gave it.

    Questions are grouped by entry once (a stable sort, so ties go to the
    earlier question) and each group reduced in one pass: this runs in infer
    for every batch, so it must not loop over questions in Python. An entry
    without questions scores -inf.
    """
    owner = np.asarray(owner)
    order = np.argsort(owner, kind="stable")
    grouped = owner[order]
    starts = np.flatnonzero(np.r_[True, grouped[1:] != grouped[:-1]])
    present = grouped[starts]
    ordered = similarity[:, order]
    best = np.maximum.reduceat(ordered, starts, axis=1)
    sizes = np.diff(np.r_[starts, len(order)])
    # The first question (in the original order) that reaches its entry's best.
    candidates = np.where(ordered == np.repeat(best, sizes, axis=1), order[None, :], len(order))
    scores = np.full((similarity.shape[0], entries), -np.inf)
    rows = np.zeros((similarity.shape[0], entries), dtype=np.int64)
    scores[:, present] = best
    rows[:, present] = np.minimum.reduceat(candidates, starts, axis=1)
    return scores, rows


def title_line(entry_id: str, keywords: Sequence[str]) -> str:
    """An entry's title for the encoder: its id's words, then its keywords (``gift cards: voucher, ...``)."""
    words = entry_id.replace("-", " ").replace("_", " ")
    return f"{words}: {', '.join(keywords)}" if keywords else words


def lexical_document(
    entry_id: str, questions: Sequence[str], keywords: Sequence[str], places: Sequence[str] = ()
) -> str:
    """What BM25 reads for an entry: its id's words, questions, keywords and the regions and places it covers.

    The answer text is left to the dense answer signal: its many shared words
    ("account", "email", "order") blur BM25 more than they help (measured on
    the tuning set, docs/models.md).
    """
    return " ".join([entry_id.replace("-", " "), *questions, *keywords, *places])
