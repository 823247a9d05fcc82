"""Cut a customer message into sentences (sub-questions), in English and Chinese.

Boundaries are ``? ! ; 。 ？ ！ ；`` and line breaks, always, and ``.`` when it
ends a word followed by a space or the end of the text, unless that word is an
abbreviation (``e.g.``, ``i.e.``, ``Mr.``, ``etc.``, a single initial). A dot
inside a token (``2.5``, ``example.com``, ``v1.2``) is never a boundary.
Closing quotes and brackets stay with the sentence they close, and runs of
punctuation (``?!``, ``...``) end one sentence, not several. Pieces without a
letter or digit (a stray ``?``, an emoji) are dropped.

Chinese messages often join two questions with a comma and a joining word
(``我的快递到哪了，还有退款多久能到账``): a joining word (还有、另外、顺便问一下,
... in simplified or traditional characters) right after a comma starts a new
sentence, and the comma before it is dropped. Only after a comma: inside a
clause the same characters are ordinary words (``这款还有货吗`` asks whether it
is in stock). ``还有，…`` after a full stop or question mark needs no rule: the
stop already split there.

English messages join a second question the same way ("where is my parcel,
also can I cancel it"): "also", "plus", "and also", "btw", "by the way" right
after a comma start a new sentence when a question follows them (a question
word, "I" or "my": "..., plus a bag" stays one sentence). Never "and" alone: ", and" joins clauses
of one question far more often ("I ordered shoes, and they are late").

This is deliberately a few rules, not a language model: it only has to find
where one question ends and the next begins in a chat message.
"""

from __future__ import annotations

_ALWAYS = frozenset("?!;\n？！；。")
_CLOSERS = frozenset("\"')]}”’」』】》")
_OPENERS = "\"'([{“‘「『【《"
# Joining words that start a new question after a comma, longest first so
# 还有就是 wins over 还有.
CONNECTORS: tuple[str, ...] = tuple(
    sorted(
        {
            "还有", "还有就是", "另外", "另外问一下", "顺便问一下", "顺便问下", "顺便问问", "顺便说一下",
            "此外", "再问一下", "还想问一下", "还想问", "对了", "以及",
            "還有", "還有就是", "另外問一下", "順便問一下", "順便問下", "順便問問", "再問一下", "還想問", "對了",
        },
        key=len,
        reverse=True,
    )
)  # fmt: skip
# English joining words that start a new question after a comma (lower-cased match, whole word).
EN_CONNECTORS: tuple[str, ...] = ("and also", "by the way", "also", "plus", "btw")
# What a question starts with after such a word.
_EN_QUESTION_STARTS = frozenset(
    {"can", "could", "do", "does", "did", "is", "are", "was", "were", "will", "would", "should", "may", "how",
     "what", "when", "where", "which", "who", "why", "i", "i'm", "im", "my", "there", "any"}
)  # fmt: skip
_CLAUSE_COMMAS = "，,、"
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
    clauses = [clause for piece in pieces for clause in _split_at_connectors(piece)]
    return [clause.strip() for clause in clauses if any(ch.isalnum() for ch in clause)]


def _split_at_connectors(piece: str) -> list[str]:
    """Cut before a joining word that follows a comma; the comma itself is dropped."""
    out: list[str] = []
    start = 0
    for i, ch in enumerate(piece):
        if ch not in _CLAUSE_COMMAS:
            continue
        after = i + 1
        while after < len(piece) and piece[after].isspace():
            after += 1
        if piece.startswith(CONNECTORS, after) or _english_connector_at(piece, after):
            out.append(piece[start:i])
            start = after
    out.append(piece[start:])
    return out


def _english_connector_at(piece: str, at: int) -> bool:
    """Whether an English joining word starts at ``at``, as a whole word with more words after it."""
    lowered = piece[at:].lower()
    for word in EN_CONNECTORS:
        rest = lowered[len(word) :]
        if lowered.startswith(word) and rest[:1] in (" ", ",", ":"):
            following = rest.lstrip(" ,:").split(" ", 1)[0].rstrip("?,.!")
            return following in _EN_QUESTION_STARTS
    return False


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
