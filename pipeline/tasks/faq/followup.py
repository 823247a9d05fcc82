"""Sub-questions that lean on the one before: drop their lead-in word, carry the earlier topic over.

A message asks "How do I return an item? And how long does that take?": split
cuts it into two sub-questions, and the second alone ("how long does that
take") has no topic, so it would be scored as a question about delivery times.
Two small rules, applied in faq's split, fix the two ways a later sentence
depends on an earlier one:

* **lead-in words**: "And", "Also,", "Plus", "btw", "by the way" at the start
  of a sub-question only join it to the message, and so do 还有、另外、顺便问一下
  in Chinese (:mod:`pipeline.tasks.sentences` splits on them after a comma,
  and on the English ones after a comma too: "where is my parcel, also can I
  cancel"); they are dropped, so a question scores the same asked alone or
  second in a message. A Chinese joining word that is also an ordinary word
  (还有 "still have", 另外 "other") is dropped only when punctuation follows
  it or, for 还有 and 以及, when a question of its own is left
  (还有退款多久能到账 → 退款多久能到账, but 还有货吗 stays).
* **carry-over**: a later sub-question that refers back ("it", "that",
  "they", "one", ...) and names at most two topic words of its own (words
  beyond function words, pronouns and question frames such as "how long",
  "when", "free") is scored together with the sub-question before it: its
  embedding and its lexical score read "<earlier question> <this question>".
  So is a short sub-question with no topic word at all ("why?", "how much?").
  The answer still shows the question as asked; the part's meta carries the
  ``context``. A follow-up that names its own topic ("Can I still cancel
  it?") keeps it: the earlier question only adds to the text.

Whether a sub-question names a topic is decided from its words alone, before
any model runs, so it costs nothing in infer and the scoring stays one pass.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from pipeline.tasks.faq.retrieval import STOP_WORDS

# Longest first, so "and also" wins over "and". Each is followed by a comma or space.
LEAD_INS: tuple[str, ...] = tuple(
    sorted(
        {
            "and", "also", "and also", "plus", "btw", "by the way", "oh and", "oh also", "one more thing",
            "another question", "another thing", "additionally", "besides", "then", "and then", "ps", "p.s.",
        },
        key=len,
        reverse=True,
    )
)  # fmt: skip
# Words that point back at something said before.
_ANAPHORS = "it its it's that this they them their those these one ones there same thing"
ANAPHORS = frozenset(_ANAPHORS.split())
# Words that frame a question without saying what it is about ("how long does it take").
_FRAMES = """
long much many soon often fast quickly take takes taking took work works happen happens possible ok okay
also too still then now really sure need want get use make know tell again else any anything something
way usually normally exactly instead either both after before until till yet just only even ever
always free available
"""
FRAME_WORDS = frozenset(_FRAMES.split())
# A sub-question this short (in words) with no topic word leans on the one before even without "it".
SHORT = 4
# A sub-question that refers back ("it", "that") with at most this many topic words leans on the one
# before: on the tuning follow-ups (faq_tune_followups.json) 0 carried 14 of 22, 1 carried 17 and 2
# carried 21, with no loss on the tuning set's two-question messages (docs/models.md).
REFERRING_TOPIC_WORDS = 2
_LATIN_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
# Chinese joining words that are also ordinary words: dropped only before punctuation, or (those in
# _ZH_BARE) when at least _ZH_LEFT characters are left ("还有货吗" asks whether there is stock).
_ZH_AMBIGUOUS = frozenset({"还有", "還有", "另外", "以及"})
_ZH_BARE = frozenset({"还有", "還有", "以及"})
_ZH_LEFT = 4
_ZH_PUNCT = "，,、：:；; "


def strip_lead_in(question: str) -> str:
    """``question`` without a leading joining word ("And", "Also,", "btw"), capitalised as it was.

    Nothing is dropped when nothing with a letter would be left ("And?").
    Chinese joining words (还有、另外、顺便问一下, ...) are dropped as the
    module's docstring says.
    """
    if not question[:1].isascii():
        return _strip_chinese_lead_in(question)
    lowered = question.lower()
    for lead in LEAD_INS:
        if not lowered.startswith(lead):
            continue
        rest = question[len(lead) :]
        if not rest or not (rest[0].isspace() or rest[0] in ",:;-–—"):
            continue  # "Andrew", "also" inside a word, "plushie"
        rest = rest.lstrip(" \t,:;-–—")
        if any(ch.isalpha() for ch in rest):
            return rest[0].upper() + rest[1:] if question[0].isupper() else rest
    return question


def _strip_chinese_lead_in(question: str) -> str:
    from pipeline.tasks.sentences import CONNECTORS

    for lead in CONNECTORS:  # longest first
        if not question.startswith(lead):
            continue
        rest = question[len(lead) :]
        stripped = rest.lstrip(_ZH_PUNCT)
        if not any(ch.isalnum() for ch in stripped):
            return question
        if lead not in _ZH_AMBIGUOUS or stripped != rest:
            return stripped
        if lead in _ZH_BARE and sum(ch.isalnum() for ch in stripped.rstrip("？?！!。.")) >= _ZH_LEFT:
            return stripped
        return question
    return question


def topic_words(question: str) -> list[str]:
    """The words of ``question`` that say what it is about: not function words, pronouns or question frames."""
    words = _LATIN_WORD.findall(question.lower().replace("’", "'"))
    ignored = STOP_WORDS | ANAPHORS | FRAME_WORDS
    return [w for w in words if w.replace("'", "") not in ignored and w not in ignored]


def leans_on_previous(question: str) -> bool:
    """Whether ``question`` says too little of its own topic and so needs the one before it.

    It must be written in Latin letters (the word lists are English) and
    either refer back ("it", "that", "they", ...) with at most
    :data:`REFERRING_TOPIC_WORDS` topic words ("Is there a minimum order for
    it?": the minimum of what?), or have no topic word at all and be at most
    :data:`SHORT` words long ("How much?").
    """
    if not all(ch.isascii() or ch in "’‘“”–—" for ch in question):
        return False
    words = _LATIN_WORD.findall(question.lower().replace("’", "'"))
    topics = topic_words(question)
    if any(w.replace("'s", "") in ANAPHORS for w in words):
        return len(topics) <= REFERRING_TOPIC_WORDS
    return bool(words) and not topics and len(words) <= SHORT


def contexts(questions: Sequence[str]) -> list[str]:
    """For each sub-question, the text it is scored with before its own ("" when it stands alone).

    A question that leans on the previous one gets that one's full scoring
    text (its own context included), so a chain of follow-ups keeps the topic.
    """
    out: list[str] = []
    for i, question in enumerate(questions):
        if i > 0 and leans_on_previous(question):
            out.append(scoring_text(questions[i - 1], out[i - 1]))
        else:
            out.append("")
    return out


def scoring_text(question: str, context: str) -> str:
    """What a sub-question is scored as: its context, if any, then the question."""
    return f"{context} {question}" if context else question
