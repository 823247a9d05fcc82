"""faq retrieval: score every knowledge-base entry from all it knows, dense and lexical, fused.

One nearest question is brittle: a customer's word the knowledge base never
uses ("voucher", "box", "profile") or a neighbour entry that shares the words
but not the intent picks the wrong entry. So an entry's score fuses:

* **dense, questions**: the best cosine between the message and the entry's
  questions (the sentence encoder, as before);
* **dense, answer**: the cosine between the message and the entry's answer
  text, which names things the questions do not ("Account > Profile",
  "parcel", "gift card number");
* **lexical**: BM25 (the ``bm25s`` library) of the message against one
  document per entry (its id's words, its questions and its answer), divided
  by the best BM25 of that message, so it lies in [0, 1]. Latin words are
  lower-cased and lightly stemmed; Chinese is read as characters and bigrams,
  so the same scorer serves a Chinese knowledge base.

``fused = (1 - a - l) * dense_questions + a * dense_answer + l * lexical``,
with the weights and the "no good match" threshold calibrated on the tuning
half of the evaluation set only (``pipeline eval --calibrate``; the numbers
are in docs/models.md). When the best two entries are within
``Settings.faq_unsure_margin`` of each other, the answer says it is unsure and
offers both rather than guessing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_WORD = re.compile(r"[a-z0-9]+|[\u4e00-\u9fff]+")
# Words that say nothing about which entry is meant.
_STOP = """
a an and are as at be but by can could did do does for from get got have how i if in is it its me my no
not of on or our please so that the there this to u up was we what when where which who why will with
would you your im ive dont cant
"""
STOP_WORDS = frozenset(_STOP.split())


def tokens(text: str) -> list[str]:
    """Lexical tokens: stemmed Latin words without stop words; Chinese characters and their bigrams."""
    out: list[str] = []
    for run in _WORD.findall(text.lower().replace("'", "")):
        if "\u4e00" <= run[0] <= "\u9fff":
            out.extend(run)
            out.extend(run[i : i + 2] for i in range(len(run) - 1))
        elif run not in STOP_WORDS:
            out.append(_stem(run))
    return out


def _stem(word: str) -> str:
    for suffix in ("ing", "ed", "es", "s"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


@dataclass(frozen=True)
class Weights:
    answer: float = 0.0  # weight of the dense score against the entry's answer text
    lexical: float = 0.0  # weight of the normalised BM25 score

    @property
    def questions(self) -> float:
        return 1.0 - self.answer - self.lexical


class Lexical:
    """BM25 over one document per knowledge-base entry."""

    def __init__(self, documents: Sequence[str]) -> None:
        import bm25s

        self.bm25 = bm25s.BM25()
        # An empty document would break the index; a placeholder token matches nothing.
        self.bm25.index([tokens(d) or ["\u2205"] for d in documents], show_progress=False)
        self.size = len(documents)

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), entries): each row divided by its best, so in [0, 1] (all 0 when nothing matches)."""
        out = np.zeros((len(texts), self.size))
        for row, text in enumerate(texts):
            query = tokens(text)
            if not query:
                continue
            raw = np.asarray(self.bm25.get_scores(query), dtype=np.float64)
            best = raw.max()
            if best > 0:
                out[row] = raw / best
        return out


def fuse(dense_questions: np.ndarray, dense_answer: np.ndarray, lexical: np.ndarray, weights: Weights) -> np.ndarray:
    """Entry scores, (messages, entries), from the three signals."""
    return weights.questions * dense_questions + weights.answer * dense_answer + weights.lexical * lexical


def best_per_entry(similarity: np.ndarray, owner: np.ndarray, entries: int) -> tuple[np.ndarray, np.ndarray]:
    """From (messages, questions) cosines: each entry's best cosine and which of its questions gave it."""
    scores = np.full((similarity.shape[0], entries), -np.inf)
    rows = np.zeros((similarity.shape[0], entries), dtype=np.int64)
    for column, entry in enumerate(owner):
        better = similarity[:, column] > scores[:, entry]
        scores[better, entry] = similarity[better, column]
        rows[better, entry] = column
    return scores, rows
