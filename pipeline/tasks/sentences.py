"""Cut a customer message into sentences (sub-questions), in English and Chinese.

Boundaries are ``? ! ; 。 ？ ！ ；`` and line breaks, always, and ``.`` when it
ends a word followed by a space or the end of the text, unless that word is an
abbreviation (``e.g.``, ``i.e.``, ``Mr.``, ``etc.``, a single initial). A dot
inside a token (``2.5``, ``example.com``, ``v1.2``) is never a boundary.
Closing quotes and brackets stay with the sentence they close, and runs of
punctuation (``?!``, ``...``) end one sentence, not several. Pieces without a
letter or digit (a stray ``?``, an emoji) are dropped.

This is deliberately a few rules, not a language model: it only has to find
where one question ends and the next begins in a chat message.
"""

from __future__ import annotations

_ALWAYS = frozenset("?!;\n？！；。")
_CLOSERS = frozenset("\"')]}”’」』】》")
_OPENERS = "\"'([{“‘「『【《"
ABBREVIATIONS = frozenset(
    {"mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "approx", "incl", "excl", "no", "nr"}
    | {"tel", "dept", "est", "inc", "ltd", "co", "corp", "fig", "ca", "cf"}
)


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text`` in order, stripped, each with its end punctuation."""
    pieces: list[str] = []
    start = i = 0
    while i < len(text):
        if text[i] in _ALWAYS or (text[i] == "." and _dot_ends_sentence(text, i)):
            end = i + 1
            while end < len(text) and (text[end] in _ALWAYS or text[end] == "." or text[end] in _CLOSERS):
                end += 1
            pieces.append(text[start:end])
            start = i = end
        else:
            i += 1
    pieces.append(text[start:])
    return [piece.strip() for piece in pieces if any(ch.isalnum() for ch in piece)]


def _dot_ends_sentence(text: str, i: int) -> bool:
    after = text[i + 1] if i + 1 < len(text) else ""
    if after and not after.isspace() and after != "." and after not in _CLOSERS:
        return False  # inside a token: 2.5, example.com, v1.2
    before = i
    while before > 0 and not text[before - 1].isspace():
        before -= 1
    word = text[before:i].lstrip(_OPENERS)
    if "." in word:  # e.g.  i.e.  U.S.
        return False
    if len(word) == 1 and word.isalpha():  # an initial: J. Smith
        return False
    return word.lower() not in ABBREVIATIONS
