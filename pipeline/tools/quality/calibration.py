"""Calibrate faq's scoring on the tuning set: fusion weights, the "no good match" threshold, the unsure margin.

Every tuning question is embedded once through the stages' own split and
model, and every signal (:class:`~pipeline.tasks.faq.retrieval.Signals`) is
computed once; each weighting on the grid is then plain arithmetic, so the
search takes a second. The objective is top-1 as the evaluation counts it:
the expected entry above the threshold, or the fallback for a question the
shop cannot answer. The threshold is the middle of the best run of candidate
thresholds (not its edge), and ties between weightings go to the simpler one
(less weight off the best question), so the choice is stable.

Only the tuning items are ever read here; :func:`cross_validate` says how
much of the tuning top-1 is the calibration fitting its own data.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.settings import Settings
from pipeline.tasks.faq.retrieval import Signals, Weights
from pipeline.tools.quality.evaluation import NONE, Item

ANSWER_GRID = (0.0, 0.1, 0.2)
TITLE_GRID = (0.0, 0.1, 0.2, 0.3)
LEXICAL_GRID = (0.0, 0.05, 0.1, 0.15, 0.2)
# The unsure answer may fire on at most this share of the tuning questions.
UNSURE_AT_MOST = 0.15


@dataclass(frozen=True)
class Choice:
    """A calibrated scoring and how it does on the items it was chosen on."""

    weights: Weights
    threshold: float
    top1: float


def tuning_signals(settings: Settings, items: Sequence[Item]) -> tuple[Signals, np.ndarray, tuple[str, ...]]:
    """The signals of every item (each one sub-question), the expected entry's column (-1: none), the entry ids."""
    from pipeline.messages import Part, Request
    from pipeline.models.batching import pad
    from pipeline.records import Record
    from pipeline.stages.infer import build_infer
    from pipeline.stages.split import build_split
    from pipeline.tasks.base import l2_normalise
    from pipeline.tasks.faq.task import part_text

    served = build_infer(settings, tasks=["faq"]).served["faq"]
    kb = served.runtime.kb
    if kb is None:
        raise ValueError("the faq runtime has no knowledge base")
    splitter = build_split(settings)
    parts: list[Part] = []
    for offset, (question, _) in enumerate(items):
        request = Request(id=f"t{offset}", task="faq", text=question, lang="en")
        record = Record("filtered", 0, offset, request.id.encode(), request.encode())
        split = [Part.decode(o.value) for o in splitter.split_one(record) if o.topic == "parts" and o.value]
        if len(split) != 1:
            raise ValueError(f"a tuning item must be one sub-question: {question!r}")
        parts += split
    vectors = []
    for start in range(0, len(parts), settings.infer.batch_max_parts):
        batch = parts[start : start + settings.infer.batch_max_parts]
        feeds = pad(batch, served.model.meta.pad_token_id, served.model.input_names)
        vectors.append(served.model.run(feeds)["embedding"][: len(batch)])
    embedded = l2_normalise(np.concatenate(vectors).astype(np.float64))
    signals = kb.signals(embedded, [part_text(p) for p in parts])
    column = {entry: i for i, entry in enumerate(kb.entries)}
    unknown = sorted({e for _, e in items if e != NONE and e not in column})
    if unknown:
        raise ValueError(f"tuning items expect entries the knowledge base lacks: {', '.join(unknown)}")
    expected = np.array([column[e] if e != NONE else -1 for _, e in items])
    return signals, expected, kb.entries


def top1(scores: np.ndarray, expected: np.ndarray, threshold: float) -> float:
    """Share of rows whose best entry is expected and reaches ``threshold``, or that expect none and do not."""
    predicted = np.where(scores.max(axis=1) >= threshold, scores.argmax(axis=1), -1)
    return float((predicted == expected).mean())


def best_threshold(scores: np.ndarray, expected: np.ndarray) -> tuple[float, float]:
    """(threshold, top-1): the middle of the widest best run of cut points between the rows' best scores."""
    best = np.sort(np.unique(scores.max(axis=1)))
    cuts = np.concatenate([[best[0] - 1e-3], (best[:-1] + best[1:]) / 2, [best[-1] + 1e-3]])
    results = np.array([top1(scores, expected, cut) for cut in cuts])
    top = results.max()
    winners = np.flatnonzero(np.isclose(results, top))
    # The longest consecutive run of winning cuts, then its middle cut point.
    runs = np.split(winners, np.flatnonzero(np.diff(winners) != 1) + 1)
    run = max(runs, key=len)
    low, high = cuts[run[0]], cuts[run[-1]]
    return round(float((low + high) / 2), 4), float(top)


def calibrate(signals: Signals, expected: np.ndarray, rows: np.ndarray | None = None) -> Choice:
    """The weights and threshold with the best top-1 on ``rows`` (default: all) of the tuning signals."""
    rows = np.arange(len(expected)) if rows is None else rows
    best: tuple[tuple[float, float], Choice] | None = None
    for answer, title, lexical in itertools.product(ANSWER_GRID, TITLE_GRID, LEXICAL_GRID):
        weights = Weights(answer=answer, title=title, lexical=lexical)
        scores = signals.fuse(weights)[rows]
        threshold, result = best_threshold(scores, expected[rows])
        key = (round(result, 9), -(answer + title + lexical))
        if best is None or key > best[0]:
            best = (key, Choice(weights, threshold, result))
    assert best is not None
    return best[1]


def unsure_margin(scores: np.ndarray, threshold: float, at_most: float = UNSURE_AT_MOST) -> float:
    """The widest margin between the best two entries at which "unsure" fires on at most ``at_most`` of the rows."""
    ordered = np.sort(scores, axis=1)
    matched = ordered[:, -1] >= threshold
    gaps = np.sort((ordered[:, -1] - ordered[:, -2])[matched])
    allowed = int(at_most * len(scores))
    if allowed >= len(gaps):
        return round(float(gaps[-1]) + 1e-3, 3) if len(gaps) else 0.0
    return float(np.floor(gaps[allowed] * 1000) / 1000)  # below the first gap that would exceed the share


def cross_validate(signals: Signals, expected: np.ndarray, folds: int = 5, seed: int = 0) -> float:
    """Top-1 on held-out folds of the tuning set when each fold's scoring is calibrated on the others."""
    order = np.random.default_rng(seed).permutation(len(expected))
    hits = 0
    for fold in np.array_split(order, folds):
        rest = np.setdiff1d(order, fold)
        choice = calibrate(signals, expected, rest)
        scores = signals.fuse(choice.weights)[fold]
        hits += round(top1(scores, expected[fold], choice.threshold) * len(fold))
    return hits / len(expected)


def calibrated_settings(choice: Choice) -> dict[str, float]:
    """The ``PIPELINE_FAQ_*`` values of ``choice``, as Settings field names."""
    return {
        "faq_answer_weight": choice.weights.answer,
        "faq_title_weight": choice.weights.title,
        "faq_lexical_weight": choice.weights.lexical,
        "faq_min_score": choice.threshold,
    }
