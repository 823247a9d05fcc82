"""faq's split: lead-in words dropped, and a sub-question without a topic scored with the one before."""

from __future__ import annotations

import pytest

from pipeline.messages import Part
from pipeline.tasks.faq.followup import contexts, leans_on_previous, scoring_text, strip_lead_in, topic_words
from pipeline.tasks.faq.task import part_text


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("And how long does that take?", "How long does that take?"),
        ("Also, can I pay with PayPal?", "Can I pay with PayPal?"),
        ("also how do i spend my voucher", "how do i spend my voucher"),
        ("And also: where is my parcel?", "Where is my parcel?"),
        ("btw do you ship to Canada", "do you ship to Canada"),
        ("By the way, do you price match?", "Do you price match?"),
        ("Andrew here, where is my order?", "Andrew here, where is my order?"),  # a name, not "and"
        ("Plushies in stock?", "Plushies in stock?"),
        ("And?", "And?"),  # nothing would be left
        ("Then?", "Then?"),
        ("How do I return it?", "How do I return it?"),
        ("还有退款多久能到账？", "退款多久能到账？"),  # 还有 joins, a question of its own is left
        ("还有，退款多久能到账？", "退款多久能到账？"),
        ("还有货吗？", "还有货吗？"),  # 还有 is the question: "is there stock?"
        ("另外能用 PayPal 付款吗？", "另外能用 PayPal 付款吗？"),  # 另外 may be "other": kept without punctuation
        ("另外，能用 PayPal 付款吗？", "能用 PayPal 付款吗？"),
        ("顺便问一下运费多少", "运费多少"),
        ("還有就是優惠碼用不了", "優惠碼用不了"),
    ],
)
def test_strip_lead_in(question: str, expected: str) -> None:
    assert strip_lead_in(question) == expected


@pytest.mark.parametrize(
    "question",
    [
        "How long does that take?",  # refers back, no topic word
        "Is it free?",
        "Do they expire?",
        "Is there a minimum order for it?",  # refers back, two topic words
        "How much?",  # short, no topic word
        "why?",
    ],
)
def test_a_question_that_leans_on_the_one_before(question: str) -> None:
    assert leans_on_previous(question)


@pytest.mark.parametrize(
    "question",
    [
        "How do I cancel my order?",  # its own topic, nothing referred to
        "cancel pls",
        "How long does shipping take?",  # a topic word, no reference back
        "Can I trade this blue throw for the grey one?",  # refers back, but four topic words of its own
        "还有退款多久能到账？",  # not English: the word lists do not apply
        "",
    ],
)
def test_a_question_that_stands_alone(question: str) -> None:
    assert not leans_on_previous(question)


def test_topic_words_leave_out_function_words_pronouns_and_frames() -> None:
    assert topic_words("How long does it take to get my refund?") == ["refund"]
    assert topic_words("Is that available in blue?") == ["blue"]


def test_contexts_carry_the_previous_question_and_chain() -> None:
    questions = [
        "Do you ship to Australia?",
        "How long does that take?",
        "And how much is it?",
        "Do you sell gift cards?",
    ]
    carried = contexts(questions)
    assert carried[0] == "" and carried[3] == ""
    assert carried[1] == "Do you ship to Australia?"
    # A follow-up of a follow-up keeps the topic of the first.
    assert carried[2] == "Do you ship to Australia? How long does that take?"
    assert contexts(["How long does that take?"]) == [""]  # nothing before it to lean on


def test_the_scored_text_of_a_part() -> None:
    assert scoring_text("Is it free?", "") == "Is it free?"
    assert scoring_text("Is it free?", "What is your return policy?") == "What is your return policy? Is it free?"
    meta = {"question": "Is it free?", "context": "What is your return policy?"}
    part = Part(id="r", task="faq", part=1, of=2, input_ids=[1], meta=meta)
    assert part_text(part) == "What is your return policy? Is it free?"
    alone = Part(id="r", task="faq", part=0, of=2, input_ids=[1], meta={"question": "Hi?"})
    assert part_text(alone) == "Hi?"
