"""How well faq picks the right entry: a tuning set, a held-out test set, two-question messages, calibration.

The project's evaluation questions (``faq_eval.json``) are split in two by
position: even items tune (the fusion weights, the "no good match" threshold,
the unsure margin), with ``faq_tune_unanswerable.json`` and
``faq_tune_customers.json`` (questions written the way customers write:
synonyms the knowledge base does not use, typos, very short and very long
messages, and questions the shop cannot answer, ``"expect": "none"``, so the
threshold is calibrated on data); odd items test. ``faq_eval_heldout.json``
holds more such questions, written apart from the knowledge base; they only
ever test, and so do ``faq_eval_heldout2.json`` and its two-question messages
``faq_eval_heldout2_messages.json`` (issue 22: written before that issue's
retrieval changes, reported beside the older held-out set, never tuned on).
Two-question messages are built from consecutive test questions
(and, for tuning, from consecutive tuning questions); ``faq_tune_followups.json``
holds tuning messages whose second question leans on the first ("How long
does that take?"), for the context carry-over in faq's split.

Answers come from the stages' own cores (split → infer → merge) in this
process, so the numbers are reproducible without a broker; ``pipeline eval``
asks the running pipeline the same questions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.settings import PROJECT_ROOT, Settings

DATA = PROJECT_ROOT / "pipeline" / "data"
NONE = "none"  # expected: no entry, the fallback reply

Item = tuple[str, str]
Answerer = Callable[[Sequence[str]], list[dict[str, Any]]]


def load_sets(data: Path = DATA) -> tuple[list[Item], list[Item]]:
    """(tuning, test): the project's questions split by position; the tuning and held-out files on their side."""
    from pipeline.tasks.faq.kb import load_eval

    project = load_eval(data / "faq_eval.json")
    heldout = load_eval(data / "faq_eval_heldout.json")
    tuning = load_eval(data / "faq_tune_unanswerable.json") + load_eval(data / "faq_tune_customers.json")
    return project[0::2] + tuning, project[1::2] + heldout


def two_question_messages(items: Sequence[Item]) -> list[tuple[str, tuple[str, str]]]:
    """Consecutive answerable test questions joined into one message, with both expected entries."""
    answerable = [item for item in items if item[1] != NONE]
    joined = []
    for (q1, e1), (q2, e2) in zip(answerable[0::2], answerable[1::2], strict=False):
        if e1 != e2:
            first = q1.rstrip(" ?.!") + "?"
            joined.append((f"{first} Also, {q2[0].lower() + q2[1:]}", (e1, e2)))
    return joined


def load_messages(path: Path) -> list[tuple[str, tuple[str, str]]]:
    """Two-question messages from a file of ``{"message": ..., "expect": [first, second]}`` items."""
    import json

    items = json.loads(path.read_text(encoding="utf-8"))["items"]
    return [(item["message"], (item["expect"][0], item["expect"][1])) for item in items]


def load_followups(data: Path = DATA) -> list[tuple[str, tuple[str, str]]]:
    """Tuning two-question messages whose second question often leans on the first (``faq_tune_followups.json``)."""
    return load_messages(data / "faq_tune_followups.json")


def load_heldout2(data: Path = DATA) -> tuple[list[Item], list[tuple[str, tuple[str, str]]]]:
    """Issue 22's held-out set: single questions and two-question messages, only ever tested."""
    from pipeline.tasks.faq.kb import load_eval

    return load_eval(data / "faq_eval_heldout2.json"), load_messages(data / "faq_eval_heldout2_messages.json")


@dataclass
class Report:
    """Top-1 on single questions, and the misses (with what the unsure flag said)."""

    hits: int = 0
    total: int = 0
    misses: list[str] = field(default_factory=list)
    unsure: int = 0  # answers that said they were unsure
    answered_misses: int = 0  # misses that got an entry (not the fallback): the ones "unsure" can flag
    unsure_on_misses: int = 0  # of those, flagged unsure
    offered_on_misses: int = 0  # of those, the right entry among the two offered

    @property
    def top1(self) -> float:
        return self.hits / self.total if self.total else 0.0


def evaluate(items: Sequence[Item], answer: Answerer) -> Report:
    """Ask each question; a hit is the expected entry, or for ``none`` no matched entry (the fallback)."""
    report = Report()
    results = answer([q for q, _ in items])
    for (question, expect), result in zip(items, results, strict=True):
        first = (result.get("answers") or [{}])[0]
        got = first.get("entry") if first.get("matched") else NONE
        unsure = bool(first.get("unsure"))
        offered = {got, *(a.get("entry") for a in first.get("alternatives", []))}
        report.total += 1
        report.unsure += unsure
        if got == expect:
            report.hits += 1
        else:
            report.answered_misses += got != NONE
            report.unsure_on_misses += unsure
            report.offered_on_misses += unsure and expect in offered
            report.misses.append(f"{question!r}: expected {expect}, got {got} ({first.get('score', 0):.3f})"
                                 + (" — unsure, offered both" if unsure and expect in offered else ""))  # fmt: skip
    return report


def evaluate_pairs(messages: Sequence[tuple[str, tuple[str, str]]], answer: Answerer) -> Report:
    """A two-question message is a hit when both sub-questions get their entry, in order."""
    report = Report()
    for (message, expected), result in zip(messages, answer([m for m, _ in messages]), strict=True):
        got = tuple(a.get("entry") if a.get("matched") else NONE for a in result.get("answers") or [])
        report.total += 1
        if got == expected:
            report.hits += 1
        else:
            report.misses.append(f"{message!r}: expected {' + '.join(expected)}, got {' + '.join(map(str, got))}")
    return report


def offline_answerer(settings: Settings, infer: Any = None, lang: str | None = "en") -> Answerer:
    """Answers from the stages' cores in this process: split → infer → merge, no broker.

    ``lang`` is every request's language; None leaves it to faq's detection, as a client that names none.
    """
    from pipeline.messages import Part, Request, Result
    from pipeline.records import Record
    from pipeline.stages.infer import build_infer
    from pipeline.stages.split import build_split
    from pipeline.tasks import get_task

    splitter = build_split(settings)
    infer = infer or build_infer(settings, tasks=["faq"])

    def answer(texts: Sequence[str]) -> list[dict[str, Any]]:
        parts: list[Part] = []
        for offset, text in enumerate(texts):
            request = Request(id=f"q{offset}", task="faq", text=text, lang=lang)
            record = Record("filtered", 0, offset, request.id.encode(), request.encode())
            parts += [Part.decode(o.value) for o in splitter.split_one(record) if o.topic == "parts" and o.value]
        by_request: dict[str, list[Result]] = {}
        for result in infer(parts):
            by_request.setdefault(result.id, []).append(result)
        merge = get_task("faq").merge
        return [merge(sorted(by_request[f"q{i}"], key=lambda r: r.part), by_request[f"q{i}"][0].of)
                for i in range(len(texts))]  # fmt: skip

    return answer
