"""faq retrieval: lexical tokens in both languages, fused scores, the unsure answer, the evaluation sets."""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline import evaluation as ev
from pipeline.tasks.faq import reply_text
from pipeline.tasks.retrieval import Lexical, Weights, best_per_entry, fuse, tokens


def test_tokens_stem_english_drop_stop_words_and_read_chinese_as_characters_and_bigrams() -> None:
    assert tokens("Where is my parcels tracking?") == ["parcel", "track"]
    assert tokens("退款多久") == ["退", "款", "多", "久", "退款", "款多", "多久"]


def test_bm25_is_normalised_per_message_and_fusion_weighs_the_three_signals() -> None:
    lexical = Lexical(["reset password login", "track parcel order", "gift card voucher"])
    scores = lexical.scores(["my voucher", "nothing matches here"])
    assert scores[0].argmax() == 2 and scores[0].max() == 1.0 and not scores[1].any()
    dense_q, dense_a = np.array([[0.5, 0.6, 0.4]]), np.array([[0.1, 0.1, 0.9]])
    fused = fuse(dense_q, dense_a, scores[:1], Weights(answer=0.2, lexical=0.3))
    assert fused.argmax() == 2 and np.isclose(fused[0, 1], 0.5 * 0.6 + 0.2 * 0.1)


def test_best_per_entry_takes_each_entrys_best_question() -> None:
    scores, rows = best_per_entry(np.array([[0.2, 0.9, 0.3]]), np.array([0, 0, 1]), 2)
    assert scores.tolist() == [[0.9, 0.3]] and rows.tolist() == [[1, 2]]


def test_an_unsure_answer_offers_both_entries_in_the_reply() -> None:
    answer = {"question": "my box?", "entry": "track-order", "answer": "Track it here.", "matched": True,
              "unsure": True, "alternatives": [{"entry": "late-delivery", "answer": "It is late."}]}  # fmt: skip
    reply = reply_text([answer])
    assert "not sure" in reply and "Track it here." in reply and "It is late." in reply


def test_the_test_set_never_holds_a_tuning_question_and_pairs_come_from_it() -> None:
    tuning, test = ev.load_sets()
    assert not {q for q, _ in tuning} & {q for q, _ in test}
    assert len(test) >= 100 + 41 and any(e == ev.NONE for _, e in test) and any(e == ev.NONE for _, e in tuning)
    pairs = ev.two_question_messages(test)
    assert pairs and all(a != b for _, (a, b) in pairs)


def test_evaluate_counts_the_fallback_as_right_for_unanswerable_questions() -> None:
    def answer(texts: Any) -> list[dict[str, Any]]:
        return [{"answers": [{"entry": "gift-cards", "matched": t != "weather?", "score": 0.5}]} for t in texts]

    report = ev.evaluate([("voucher?", "gift-cards"), ("weather?", ev.NONE), ("box?", "track-order")], answer)
    assert (report.hits, report.total) == (2, 3) and "expected track-order" in report.misses[0]
