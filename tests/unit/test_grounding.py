"""The sentence check a chat reply passes before it streams, on the shop's own entries."""

from __future__ import annotations

import json

import pytest

from pipeline.settings import PROJECT_ROOT
from pipeline.stages.generate.grounding import CheckedStream, Grounds, fact_sentences
from pipeline.stages.generate.sessions import Session, Turn

KB = {e["id"]: e["answer"] for e in json.loads((PROJECT_ROOT / "pipeline/data/faq_shop.json").read_text())["entries"]}


def grounds(message: str, *entries: str) -> Grounds:
    return Grounds.of([(e, KB[e]) for e in entries], message)


RETURNS = grounds("Can I return shoes that don't fit?", "return-policy")


@pytest.mark.parametrize(
    ("sentence", "reason"),
    [
        # The demo's reply before grounding: it contradicts itself and the facts.
        ("You can return shoes that don't fit, but you can't return shoes that don't fit.", "negation not return"),
        ("You can return unused items within 14 days.", "number 14"),
        ("Call us at 1-800-555-0100 to start a return.", "number 1-800-555-0100"),
        ("Start a return under Account > Returns.", "menu step account > returns"),
        ("Email returns@northwind.example for a label.", "e-mail returns@northwind.example"),
        ("I'm sorry for the confusion, but I'm sorry for any confusion.", "unsupported"),
        ("Shoes can be exchanged at any store for store credit.", "unsupported"),
    ],
)
def test_a_sentence_the_facts_do_not_support_fails(sentence: str, reason: str) -> None:
    verdict = RETURNS.check(sentence)
    assert not verdict.ok and verdict.reason == reason


@pytest.mark.parametrize(
    "sentence",
    [
        "Start a return under Account > Orders to get a free prepaid label.",
        "You can return shoes that don't fit within 30 days of delivery, unused and in their original packaging.",
        "Then drop the parcel at any UPS location.",
        "I hope this helps!",
    ],
)
def test_a_sentence_the_facts_support_passes(sentence: str) -> None:
    assert RETURNS.check(sentence).ok


def test_dropping_a_facts_negation_is_a_contradiction() -> None:
    modify = grounds("Can I change my order?", "modify-order")
    verdict = modify.check("Orders can be edited once they're placed.")
    assert not verdict.ok and verdict.reason == "negation dropped"
    assert modify.check("Orders can't be edited once they're placed.").ok


def test_numbers_of_the_message_are_grounded_too() -> None:
    message = grounds("I ordered 3 pairs, can I return 2 of them?", "return-policy")
    assert message.check("You can return 2 of the 3 pairs within 30 days of delivery.").ok


def test_the_lead_is_the_entry_sentence_that_answers_the_question() -> None:
    refunds = grounds("When will my bank show the refund?", "refund-status")
    lead = refunds.lead("When will my bank show the refund?", ["refund-status"])
    assert lead is not None and "3-5 business days" in lead.text
    assert refunds.lead("hello", ["refund-status"]) == refunds.facts[0], "no shared word: the entry's first sentence"
    asked = "Can I check my gift card balance on your Gift Cards page?"
    gift = grounds(asked, "redeem-gift-card")
    lead = gift.lead(asked, ["redeem-gift-card"])
    assert lead is not None and lead.text.startswith("You can check the balance"), "a later sentence that says more"
    lead = gift.lead("How do I check the balance?", ["redeem-gift-card"])
    assert lead == gift.facts[0], "one word more is not enough to pass over the answer-first sentence"


def test_across_entries_the_sentence_sharing_most_with_the_question_leads() -> None:
    both = grounds("How much does it cost?", "shipping-times", "shipping-costs")
    lead = both.lead("How much does it cost?", ["shipping-times", "shipping-costs"])
    assert lead is not None and lead.entry == "shipping-costs"


def test_a_checked_stream_streams_good_sentences_replaces_a_bad_one_and_stops() -> None:
    lead = fact_sentences(KB["return-policy"])[0]
    stream = CheckedStream(RETURNS, lead, max_sentences=3)
    out = [
        stream.push(piece)
        for piece in [" You can start", " a return under Account > Orders.", " It takes 14", " days."]
    ]
    assert out[:2] == [("", True), ("", True)], "a sentence streams once it has ended (4.95 has a dot too)"
    assert out[2] == (" You can start a return under Account > Orders.", True)
    assert out[3] == ("", True)
    text, go_on = stream.push(" More")
    out[1] = out[2]
    assert not go_on, "a replacement ends the model's part of the reply"
    assert text == " " + fact_sentences(KB["return-policy"])[1], "the closest fact sentence stands in"
    assert stream.text == lead + out[1][0] + text
    report = stream.report()
    assert report["replaced"] == 1 and report["kept"] == 1 and report["fallback"] is False
    assert report["rejected"] == [{"sentence": "It takes 14 days.", "reason": "number 14"}]


def test_a_reply_with_nothing_of_the_models_own_is_a_fallback() -> None:
    lead = fact_sentences(KB["return-policy"])[0]
    stream = CheckedStream(RETURNS, lead)
    assert stream.push(" I'm sorry for the confusion. More") == (" " + fact_sentences(KB["return-policy"])[1], False)
    assert stream.finish(complete=True) == ""
    assert stream.report()["fallback"] is True


def test_a_repeat_is_dropped_and_a_cut_off_sentence_is_not_streamed() -> None:
    lead = fact_sentences(KB["return-policy"])[0]
    stream = CheckedStream(RETURNS, lead)
    assert stream.push(" " + lead + " Start") == ("", True)
    assert stream.finish(complete=False) == ""
    assert stream.text == lead and stream.report()["dropped"] == 2


def test_a_session_keeps_the_entries_each_turn_drew_on_and_reads_turns_without_them() -> None:
    session = Session()
    session.add(
        Turn("r1", "Do you ship to Canada?", "We ship to Canada.", 10, [("international-shipping", "We ship.")]),
        100,
        1.0,
    )
    again = Session.decode(session.encode())
    assert again.turns[0].entries == [("international-shipping", "We ship.")]
    old = b'{"turns": [["r0", "hi", "hello", 3]], "last_ms": 2.0}'  # written before turns kept their entries
    assert Session.decode(old).turns[0].entries == []


def test_chinese_sentences_are_cut_and_checked_too() -> None:
    """A model that writes Chinese (PIPELINE_CHAT_LANGUAGES=en,zh with a multilingual model) is checked the same way."""
    kb_zh = {
        e["id"]: e["answer"]
        for e in json.loads((PROJECT_ROOT / "pipeline/data/faq_shop_zh.json").read_text())["entries"]
    }
    facts = Grounds.of([("return-policy", kb_zh["return-policy"])], "鞋子不合适能退吗？")
    assert len(facts.facts) == 2
    assert facts.check("未使用且包装完好的商品可在签收后 30 天内退货。").ok
    assert facts.check("商品可在签收后 14 天内退货。").reason == "number 14"
    assert not facts.check("您不能退货。").ok
    stream = CheckedStream(facts, facts.facts[0].text)
    released, go_on = stream.push("在“账户 > 订单”或退货页面发起退货即可获取免费的预付运单。然后")
    assert released == "在“账户 > 订单”或退货页面发起退货即可获取免费的预付运单。" and go_on, (
        "no space between Chinese sentences"
    )
