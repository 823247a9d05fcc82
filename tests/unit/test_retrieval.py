"""faq retrieval: lexical tokens in both languages, fused scores, the unsure answer, evaluation sets, calibration."""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.tasks.faq.retrieval import (
    Lexical,
    Signals,
    Synonyms,
    Weights,
    best_per_entry,
    fuse,
    lexical_document,
    title_line,
    tokens,
)
from pipeline.tasks.faq.task import reply_text
from pipeline.tools.quality import calibration as cal
from pipeline.tools.quality import evaluation as ev


def test_tokens_stem_english_add_trigrams_drop_stop_words_and_read_chinese_as_characters_and_bigrams() -> None:
    english = tokens("Where is my parcels?")
    assert [t for t in english if not t.startswith("~")] == ["parcel"]
    assert {"~#pa", "~par", "~ls#"} <= set(english)
    assert tokens("退款多久") == ["退", "款", "多", "久", "退款", "款多", "多久"]
    assert "快递" in tokens("我的快递到哪了? tracking") and "track" in tokens("我的快递到哪了? tracking")


def test_a_typo_still_meets_its_word_through_trigrams() -> None:
    lexical = Lexical(["refund money back", "track parcel order", "gift card voucher"])
    assert lexical.scores(["when will i get my refnd"])[0].argmax() == 0
    assert lexical.scores(["wheres my parcl"])[0].argmax() == 1


def test_bm25_is_saturated_so_a_weak_best_match_stays_low() -> None:
    lexical = Lexical(["reset password login", "track parcel order", "gift card voucher", "opening hours store"])
    scores = lexical.scores(["my voucher", "xyz qqq", "gift card voucher gift card voucher"])
    assert scores[0].argmax() == 2 and 0 < scores[0].max() < scores[2].max() < 1
    assert not scores[1].any()


def test_fusion_weighs_the_four_signals_and_skips_a_zero_weight() -> None:
    q, a, t, lex = (np.array([v]) for v in ([0.5, 0.6, 0.4], [0.1, 0.1, 0.9], [0.2, 0.0, 0.8], [0.0, 0.0, 0.5]))
    signals = Signals(questions=q, answer=a, title=t, lexical=lex, rows=np.zeros((1, 3), dtype=np.int64))
    fused = signals.fuse(Weights(answer=0.2, title=0.1, lexical=0.3))
    assert fused.argmax() == 2 and np.isclose(fused[0, 1], 0.4 * 0.6 + 0.2 * 0.1)
    assert np.allclose(signals.fuse(Weights()), q)
    assert np.allclose(fuse(q, a, lex, Weights(answer=0.2, lexical=0.3)), 0.5 * q + 0.2 * a + 0.3 * lex)


def test_best_per_entry_takes_each_entrys_best_question() -> None:
    scores, rows = best_per_entry(np.array([[0.2, 0.9, 0.3]]), np.array([0, 0, 1]), 2)
    assert scores.tolist() == [[0.9, 0.3]] and rows.tolist() == [[1, 2]]


def test_synonyms_are_read_as_their_groups_first_word_on_both_sides() -> None:
    groups = [["order", "parcel", "package", "box"], ["balance", "left", "remaining"], ["gift card", "voucher"]]
    synonyms = Synonyms(groups)
    assert synonyms("where is my parcel") == "where is my order"
    assert synonyms("how much is left on my voucher") == "how much is balance on my gift card"
    assert synonyms("boxing day, leftovers") == "boxing day, leftovers"  # whole words only
    assert tokens("my box", synonyms) == tokens("my order")
    documents = ["missing item from my order", "lost parcel never arrived"]
    plain, read = Lexical(documents), Lexical(documents, synonyms=groups)
    asked = ["one thing is missing from my parcel"]
    assert plain.raw(asked)[0, 1] > 0 and read.raw(asked)[0, 0] > plain.raw(asked)[0, 0]


def test_an_entry_is_read_by_its_id_questions_keywords_and_places() -> None:
    assert lexical_document("ship", ["Do you ship abroad?"], ["overseas"], ["EU", "Ireland"]) == (
        "ship Do you ship abroad? overseas EU Ireland"
    )
    lexical = Lexical(["returns send back", "ship abroad overseas EU Ireland France"])
    assert lexical.raw(["Do you deliver to Ireland?"])[0].argmax() == 1


def test_an_entry_is_read_by_its_id_questions_and_keywords() -> None:
    assert title_line("gift-cards", ["voucher", "gift certificate"]) == "gift cards: voucher, gift certificate"
    assert title_line("hours", []) == "hours"
    assert lexical_document("gift-cards", ["Do you sell gift cards?"], ["voucher"]) == (
        "gift cards Do you sell gift cards? voucher"
    )


def test_an_unsure_answer_offers_both_entries_in_the_reply() -> None:
    answer = {"question": "my box?", "entry": "track-order", "answer": "Track it here.", "matched": True,
              "unsure": True, "alternatives": [{"entry": "late-delivery", "answer": "It is late."}]}  # fmt: skip
    reply = reply_text([answer])
    assert "not sure" in reply and "Track it here." in reply and "It is late." in reply


def test_the_test_set_never_holds_a_tuning_question_and_pairs_come_from_it() -> None:
    tuning, test = ev.load_sets()
    assert not {q.casefold() for q, _ in tuning} & {q.casefold() for q, _ in test}
    assert len(test) >= 100 + 41 and any(e == ev.NONE for _, e in test) and any(e == ev.NONE for _, e in tuning)
    assert len(tuning) >= 41 + 12 + 100
    pairs = ev.two_question_messages(test)
    assert pairs and all(a != b for _, (a, b) in pairs)


def test_evaluate_counts_the_fallback_as_right_and_what_the_unsure_flag_said_on_misses() -> None:
    def answer(texts: Any) -> list[dict[str, Any]]:
        alternatives = [{"entry": "track-order"}]
        return [{"answers": [{"entry": "gift-cards", "matched": t != "weather?", "score": 0.5,
                              "unsure": t == "box?", "alternatives": alternatives}]} for t in texts]  # fmt: skip

    items = [("voucher?", "gift-cards"), ("weather?", ev.NONE), ("box?", "track-order"), ("sun?", ev.NONE)]
    report = ev.evaluate(items, answer)
    assert (report.hits, report.total) == (2, 4) and "expected track-order" in report.misses[0]
    assert (report.answered_misses, report.unsure_on_misses, report.offered_on_misses) == (2, 1, 1)


# -- calibration ---------------------------------------------------------------------


def _signals(questions: np.ndarray, lexical: np.ndarray) -> Signals:
    zeros = np.zeros_like(questions)
    return Signals(questions=questions, answer=zeros, title=zeros, lexical=lexical, rows=zeros.astype(np.int64))


def test_the_threshold_is_the_middle_of_the_best_run_of_cut_points() -> None:
    scores = np.array([[0.9, 0.1], [0.6, 0.2], [0.3, 0.1], [0.1, 0.05]])
    expected = np.array([0, 0, -1, -1])  # two answerable, two that must get the fallback
    threshold, result = cal.best_threshold(scores, expected)
    assert result == 1.0 and threshold == 0.45  # between 0.3 and 0.6, in the middle
    assert cal.top1(scores, expected, 0.7) == 0.75


def test_calibrate_finds_the_signal_that_separates_and_cross_validation_runs_on_held_out_folds() -> None:
    rng = np.random.default_rng(1)
    expected = np.array([0, 1, 2, 0, 1, 2, -1, -1] * 5)
    # The dense signal is noise; the lexical one points at the right entry and is low for "none" items.
    dense = rng.uniform(0.3, 0.5, (len(expected), 3))
    lexical = np.full((len(expected), 3), 0.05)
    lexical[np.flatnonzero(expected >= 0), expected[expected >= 0]] = 0.9
    choice = cal.calibrate(_signals(dense, lexical), expected)
    assert choice.weights.lexical == max(cal.LEXICAL_GRID) and choice.top1 == 1.0
    assert cal.cross_validate(_signals(dense, lexical), expected) == 1.0
    assert cal.calibrated_settings(choice)["faq_lexical_weight"] == max(cal.LEXICAL_GRID)


def test_the_unsure_margin_fires_on_at_most_the_share_it_is_given() -> None:
    scores = np.array([[0.9, 0.89], [0.8, 0.7], [0.7, 0.4], [0.6, 0.1], [0.2, 0.19]])
    margin = cal.unsure_margin(scores, threshold=0.5, at_most=0.2)  # one of five
    gaps = scores[:, 0] - scores[:, 1]
    fires = (scores[:, 0] >= 0.5) & (gaps < margin)
    assert fires.sum() == 1 and fires[0]


def test_the_lexical_table_gives_what_bm25s_gives_for_the_whole_query() -> None:
    import bm25s

    documents = ["reset password login", "track parcel order parcel", "gift card voucher", "退款 多久 到账"]
    lexical = Lexical(documents)
    reference = bm25s.BM25()
    reference.index([tokens(d) for d in documents], show_progress=False)
    for query in ["where is my parcel parcel", "gift vouchr", "退款多久", "password reset for my login"]:
        assert np.allclose(lexical.raw([query])[0], reference.get_scores(tokens(query)))


def test_best_per_entry_equals_a_plain_loop_for_any_grouping_and_ties() -> None:
    rng = np.random.default_rng(3)
    owner = rng.integers(0, 6, 40)  # unsorted; entry 6 has no question
    similarity = np.round(rng.uniform(-1, 1, (5, 40)), 1)  # rounded: many ties
    scores, rows = best_per_entry(similarity, owner, 7)
    expected_scores, expected_rows = np.full((5, 7), -np.inf), np.zeros((5, 7), dtype=np.int64)
    for column, entry in enumerate(owner):
        better = similarity[:, column] > expected_scores[:, entry]
        expected_scores[better, entry] = similarity[better, column]
        expected_rows[better, entry] = column
    assert np.array_equal(scores, expected_scores) and np.array_equal(rows, expected_rows)
