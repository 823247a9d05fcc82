"""The chat evaluation's scorer on hand-written replies, and the shape of its two sets.

Replies are written here, not taken from a model: the old bad replies of issue
18 must fail, the knowledge base's own answer text must pass every question
it answers, and the held-out set must cover every entry and share no question
with the tuning set.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from pipeline.commands.chat_eval import render_table
from pipeline.tools.quality import chat_eval as ce
from pipeline.tools.quality.claims import ungrounded

KBS = ce.load_kbs()
HELDOUT = ce.load_set("heldout")
TUNING = ce.load_set("tuning")
RETURNS = KBS["en"]["return-policy"]


def answer(entries: dict[str, str], reply: str, **extra: Any) -> dict[str, Any]:
    """A chat result as generate builds it: ``entries`` maps entry id -> its answer text."""
    found = [{"entry": e, "matched": True, "answer": text, "question": "", "score": 0.9} for e, text in entries.items()]
    return {"reply": reply, "entries": found, "session": "s", "generated": True, **extra}


def question(**fields: Any) -> ce.Question:
    base = {"id": "t-01", "text": "Can I return shoes that don't fit?", "entries": ["return-policy"],
            "facts": [["30 days", "thirty days"], ["unused", "original packaging"]],
            "contradicts": [r"\b(14|60|90) days\b", r"can(no|')t return"]}  # fmt: skip
    return ce._question({**base, **fields})


# -- the scorer -------------------------------------------------------------------------------


def test_the_old_self_contradicting_reply_fails_facts_and_the_contradiction_check() -> None:
    reply = "You can return shoes that don't fit, but you can't return shoes that don't fit."
    s = ce.score(question(), "ok", answer({"return-policy": RETURNS}, reply), KBS)
    assert s.right_entry and s.grounded
    assert not s.facts and s.missing_facts == [["30 days", "thirty days"], ["unused", "original packaging"]]
    assert not s.no_contradiction and not s.passed


def test_an_invented_window_fails_grounded_and_no_contradiction() -> None:
    reply = "Yes! You can return unused shoes in their original packaging within 14 days of delivery."
    s = ce.score(question(), "ok", answer({"return-policy": RETURNS}, reply), KBS)
    assert s.ungrounded == ["14 days"] and not s.grounded
    assert s.contradictions == [r"\b(14|60|90) days\b"]
    assert not s.passed


def test_the_entrys_own_answer_passes() -> None:
    s = ce.score(question(), "ok", answer({"return-policy": RETURNS}, RETURNS), KBS)
    assert s.passed, s
    assert not s.fallback and not s.retrieved


def test_a_paraphrase_with_the_facts_passes() -> None:
    reply = (
        "Sure: shoes can go back within thirty days of delivery, as long as they are unused and in the "
        "original packaging. Start it under Account › Orders and drop the parcel at a UPS location."
    )
    assert ce.score(question(), "ok", answer({"return-policy": RETURNS}, reply), KBS).passed


def test_the_wrong_entry_fails_right_entry_and_a_two_part_message_needs_both() -> None:
    wrong = answer({"exchange": KBS["en"]["exchange"]}, RETURNS)
    assert ce.score(question(), "ok", wrong, KBS).missing_entries == ["return-policy"]
    two = question(entries=["return-policy", "refund-status"])
    one = ce.score(two, "ok", answer({"return-policy": RETURNS}, RETURNS), KBS)
    assert not one.right_entry and one.missing_entries == ["refund-status"]
    unmatched = answer({"return-policy": RETURNS}, RETURNS)
    unmatched["entries"][0]["matched"] = False  # below faq's threshold: not what the reply drew on
    assert not ce.score(question(), "ok", unmatched, KBS).right_entry


def test_the_message_quoted_back_is_not_a_fact() -> None:
    """The pipeline's no-answer reply quotes the message; the words it quotes are not facts the reply states."""
    q = question(text="我忘记密码了，怎么办？", entries=["reset-password"], facts=[["忘记密码"]], contradicts=[])
    echo = f"抱歉，我没有找到“{q.text}”的答案，稍后会有同事联系您。"
    assert not ce.score(q, "ok", answer({"reset-password": KBS["zh"]["reset-password"]}, echo), KBS).facts
    said = "在登录页点击“忘记密码？”并输入账户邮箱。"
    assert ce.score(q, "ok", answer({"reset-password": KBS["zh"]["reset-password"]}, said), KBS).facts


def test_no_question_can_pass_facts_by_repeating_itself() -> None:
    echoes = [
        q.id
        for q in [*HELDOUT.questions(), *TUNING.questions()]
        if all(ce.fact_found(g, ce.normalise(q.text)) for g in q.facts)
    ]
    assert not echoes, echoes


def test_an_error_answer_never_passes_even_with_a_good_reply() -> None:
    s = ce.score(question(), "partial", answer({"return-policy": RETURNS}, RETURNS), KBS)
    assert s.facts and s.grounded and not s.passed and s.failed() == ["status=partial"]
    assert not ce.score(question(), "timeout", None, KBS).passed


def test_fallback_and_retrieved_are_reported() -> None:
    fell = answer({"return-policy": RETURNS}, RETURNS, grounding={"sentences": 2, "replaced": 2, "fallback": True})
    assert ce.score(question(), "ok", fell, KBS).fallback
    zh = answer({"return-policy": KBS["zh"]["return-policy"]}, KBS["zh"]["return-policy"], generated=False)
    s = ce.score(HELDOUT.chinese[1], "ok", zh, KBS)
    assert s.retrieved and not s.fallback and s.passed


@pytest.mark.parametrize(
    ("reply", "sources", "wrong"),
    [
        ("Standard shipping is 4.95 dollars, free over $50.00.", ["shipping-costs"], []),
        ("Standard shipping is $5.95.", ["shipping-costs"], ["$5.95"]),
        ("Standard delivery takes 3–5 business days; order by 2pm.", ["shipping-times"], []),
        ("Standard delivery takes 3 to 7 business days.", ["shipping-times"], ["3 to 7 business days"]),
        ("Orders placed before 3 pm ship the same day.", ["shipping-times"], ["3 pm"]),
        ("The link is valid for an hour.", ["reset-password"], []),  # 60 minutes
        ("The link is valid for 24 hours.", ["reset-password"], ["24 hours"]),
        ("It takes effect within two days.", ["unsubscribe-newsletter"], []),  # 48 hours
        ("Call 800-555-0199 or write to support@northwindgoods.example.", ["contact-support"], []),
        ("Call 1-800-555-0100 or write to help@northwindgoods.example.", ["contact-support"],
         ["help@northwindgoods.example", "1-800-555-0100"]),
        ("Download it under Account > Orders > Invoice.", ["invoice"], []),
        ("Download it under Account > Billing.", ["invoice"], ["Account > Billing"]),
        ("Download it under Account > Orders.", ["invoice"], []),  # a run of Account > Orders > Invoice
        ("Save 10% with Klarna.", ["pay-later"], ["10%"]),
        ("1. Choose Klarna at checkout.\n2. Pay in 4 instalments every two weeks.", ["pay-later"], []),
        ("We reply within 24 hours, see www.northwindgoods.example/help", ["contact-support"],
         ["www.northwindgoods.example/help"]),
        ("营业时间为周一至周六上午9点到晚上8点。", ["store-hours"], []),
        ("营业时间为周一至周六上午7点到晚上9点。", ["store-hours"], ["上午7点", "晚上9点"]),
        ("满 50 美元免运费，否则 5.95 美元。", ["shipping-costs"], ["5.95 美元"]),
    ],
)  # fmt: skip
def test_grounded_numbers_prices_times_contacts_and_paths(reply: str, sources: list[str], wrong: list[str]) -> None:
    texts = [KBS["zh" if re.search(r"[\u4e00-\u9fff]", reply) else "en"][e] for e in sources]
    assert ungrounded(reply, texts) == wrong


def test_a_number_the_customer_gave_is_grounded_and_an_earlier_turn_counts_in_a_conversation() -> None:
    assert ungrounded("Your order 48213 is on its way.", ["Where is order 48213?"]) == []
    canada = HELDOUT.conversations[0][1]
    earlier = [(canada[0].text, answer({"international-shipping": KBS["en"]["international-shipping"]}, "Yes."))]
    later = answer({"shipping-times": KBS["en"]["shipping-times"]}, "It takes 7-14 business days.")
    assert ce.score(canada[1], "ok", later, KBS, earlier).grounded
    assert not ce.score(canada[1], "ok", later, KBS).grounded


def test_normalise_makes_dashes_quotes_times_and_prices_alike() -> None:
    said = ce.normalise("Standard  shipping is 4.95 dollars; it ships by 2:00 p.m. in 3 – 5 days. Account›Orders")
    assert said == "standard shipping is $4.95; it ships by 2 pm in 3-5 days. account > orders"
    assert ce.fact_found(["$4.95"], said) and not ce.fact_found(["$4.9"], said)
    assert not ce.fact_found(["$50"], ce.normalise("up to $500")) and ce.fact_found(["neighbour"], "neighbours")
    assert ce.normalise("在“账户 > 订单”中") == '在"账户>订单"中'


def test_the_table_counts_each_criterion() -> None:
    tally = ce.Tally()
    tally.add(ce.score(question(), "ok", answer({"return-policy": RETURNS}, RETURNS), KBS), {"first_token_ms": 90})
    bad = "You can return shoes that don't fit, but you can't return shoes that don't fit."
    tally.add(ce.score(question(), "ok", answer({"return-policy": RETURNS}, bad), KBS), {"first_token_ms": 200})
    table = render_table("heldout", {"english": tally})
    row = next(line for line in table.splitlines() if line.startswith("English"))
    assert row.split()[1:] == ["2", "2", "(100%)", "1", "(50%)", "2", "(100%)", "1", "(50%)", "1", "(50%)",
                               "0", "(0%)", "0", "(0%)"]  # fmt: skip
    assert "p50 145 ms p99 199 ms" in table


# -- the sets ---------------------------------------------------------------------------------


def test_the_heldout_set_is_big_enough_and_covers_every_entry() -> None:
    assert len(HELDOUT.english) >= 60 and len(HELDOUT.chinese) >= 20 and len(HELDOUT.conversations) >= 10
    assert all(len(turns) == 2 for _, turns in HELDOUT.conversations)
    covered = {e for q in HELDOUT.english for e in q.entries}
    assert covered == set(KBS["en"]), set(KBS["en"]) - covered
    assert sum(len(q.entries) > 1 for q in HELDOUT.english) >= 5, "two-part messages"
    assert all(re.search(r"[\u4e00-\u9fff]", q.text) for q in HELDOUT.chinese)


def test_the_tuning_set_is_apart_from_the_heldout_set() -> None:
    assert 25 <= len(TUNING.english) < len(HELDOUT.english) and len(TUNING.chinese) >= 8
    assert len(TUNING.conversations) >= 5

    shared = {_key(q.text) for q in HELDOUT.questions()} & {_key(q.text) for q in TUNING.questions()}
    assert not shared, shared


def test_no_heldout_question_is_a_knowledge_base_question_or_in_the_faq_sets() -> None:
    """faq is tuned on faq_eval.json and friends; the chat held-out set must be new text to the whole system."""
    seen = set()
    for name in ("faq_shop.json", "faq_shop_zh.json"):
        raw = json.loads((ce.DATA / name).read_text(encoding="utf-8"))
        seen |= {_key(q) for entry in raw["entries"] for q in entry["questions"]}
    for path in ce.DATA.glob("faq_*.json"):
        raw = json.loads(path.read_text(encoding="utf-8"))
        items = raw.get("items", []) if isinstance(raw, dict) else raw
        seen |= {_key(str(i.get("question", ""))) for i in items if isinstance(i, dict)}
    shared = [q.id for q in HELDOUT.questions() if _key(q.text) in seen]
    assert not shared, shared


def _key(text: str) -> str:
    return re.sub(r"[\W_]+", " ", text.lower()).strip()


@pytest.mark.parametrize("evalset", [HELDOUT, TUNING], ids=["heldout", "tuning"])
def test_every_fact_alternative_is_in_its_entry_or_a_listed_paraphrase(evalset: ce.EvalSet) -> None:
    unjustified = []
    for q in evalset.questions():
        texts = ce.normalise(" ".join(kb[e] for kb in KBS.values() for e in q.entries))
        for group in q.facts:
            assert group, q.id
            for alt in group:
                if not ce.fact_found([alt], texts) and alt not in evalset.paraphrases:
                    unjustified.append((q.id, alt))
    assert not unjustified, unjustified
    assert all(value for value in evalset.paraphrases.values())


@pytest.mark.parametrize("evalset", [HELDOUT, TUNING], ids=["heldout", "tuning"])
def test_the_retrieved_text_alone_passes_every_question(evalset: ce.EvalSet) -> None:
    """Each question's entries' own answers (Chinese for the Chinese part) pass: facts reachable, patterns sane."""
    failed = []
    for part in ce.PARTS:
        lang = "zh" if part == "chinese" else "en"
        for turns in evalset.part(part):
            earlier: list[tuple[str, dict[str, Any] | None]] = []
            for q in turns:
                texts = {e: KBS[lang][e] for e in q.entries}
                result = answer(texts, "\n\n".join(texts.values()))
                s = ce.score(q, "ok", result, KBS, earlier)
                if not s.passed:
                    failed.append((q.id, s.failed(), s.missing_facts, s.ungrounded, s.contradictions))
                earlier.append((q.text, result))
    assert not failed, failed


def test_the_files_are_valid_json_with_ids_unique() -> None:
    for path in ce.SETS.values():
        raw = json.loads(path.read_text(encoding="utf-8"))
        assert set(raw) >= {"about", "english", "chinese", "conversations", "paraphrases"}
    for evalset in (HELDOUT, TUNING):
        ids = [q.id for q in evalset.questions()]
        assert len(ids) == len(set(ids))
