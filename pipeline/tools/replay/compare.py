"""Candidate answers against recorded ones: what changed, and whether the candidate is worse than a margin.

Pure functions over answers (``Answer`` structs keyed by request id) and the
requests they answered, so the whole judgement is tested without Kafka:

* **agreement**: the share of requests whose candidate answer says the same
  as the recorded one, by task: faq the same entry per sub-question (a
  fallback counts as "no entry"), qa the same span, classify the same label,
  embed a cosine of at least 0.999, chat the same retrieved entries;
* **matched**: faq and chat sub-questions that got an entry rather than the
  fallback reply (a higher threshold lowers it);
* **errors**: answers that are not ``ok``;
* **grounded** (chat): replies that state nothing the retrieved facts and the
  customer's message do not state (the chat evaluation's rule,
  :func:`pipeline.tools.quality.claims.ungrounded`);
* **latency** p50/p99 of the end-to-end time each answer reports;
* **cost**: CPU and model milliseconds per answer, from the answers' cost
  headers (``pipeline-cost-*``), where they carry them.

:func:`gate` turns a comparison into the reasons a rollout should stop.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.messages import Answer, Request
from pipeline.tools.quality.chat_eval import percentile, retrieved_texts
from pipeline.tools.quality.claims import ungrounded

# Metrics where more is better; for the others (errors, latency, cost) less is.
HIGHER_IS_BETTER = {"agreement", "matched", "grounded"}
SHARES = ("matched", "errors", "grounded")


@dataclass
class Side:
    """One pipeline's answers to the replayed requests, summed."""

    answered: int = 0
    errors: int = 0
    sub_questions: int = 0
    matched: int = 0
    chat: int = 0
    grounded: int = 0
    latency_ms: list[float] = field(default_factory=list)
    cost_ms: list[float] = field(default_factory=list)

    def add(self, request: Request | None, answer: Answer, cost_ms: float | None = None) -> None:
        self.answered += 1
        if answer.status != "ok":
            self.errors += 1
        if answer.latency_ms:
            self.latency_ms.append(float(sum(answer.latency_ms.values())))
        if cost_ms is not None:
            self.cost_ms.append(cost_ms)
        result = answer.result or {}
        if answer.status == "ok" and answer.task == "faq":
            for sub in result.get("answers") or []:
                self.sub_questions += 1
                self.matched += bool(sub.get("matched"))
        if answer.status == "ok" and answer.task == "chat":
            entries = result.get("entries") or []
            self.sub_questions += max(1, len(entries))
            self.matched += sum(1 for e in entries if e.get("matched", True))
            self.chat += 1
            sources = [*retrieved_texts(result), *([request.text] if request is not None and request.text else [])]
            self.grounded += not ungrounded(str(result.get("reply") or ""), sources)

    def metrics(self) -> dict[str, float | None]:
        return {
            "matched": _share(self.matched, self.sub_questions),
            "errors": _share(self.errors, self.answered),
            "grounded": _share(self.grounded, self.chat),
            "latency_p50_ms": percentile(self.latency_ms, 0.5),
            "latency_p99_ms": percentile(self.latency_ms, 0.99),
            "cost_ms_per_answer": sum(self.cost_ms) / len(self.cost_ms) if self.cost_ms else None,
        }


@dataclass
class Comparison:
    """Both sides over the requests both answered, and how often they agreed."""

    requests: int
    both: int
    agreed: int
    recorded: dict[str, float | None]
    candidate: dict[str, float | None]
    missing_recorded: int
    missing_candidate: int
    changed: list[dict[str, Any]]  # a few examples of answers that differ

    @property
    def agreement(self) -> float | None:
        return _share(self.agreed, self.both)

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests, "both": self.both, "agreed": self.agreed, "agreement": self.agreement,
            "recorded": self.recorded, "candidate": self.candidate, "missing_recorded": self.missing_recorded,
            "missing_candidate": self.missing_candidate, "changed": self.changed,
        }  # fmt: skip

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Comparison:
        keys = ("requests", "both", "agreed", "recorded", "candidate", "missing_recorded", "missing_candidate")
        return cls(**{k: data[k] for k in keys}, changed=list(data.get("changed", [])))


def signature(answer: Answer) -> Any:
    """What must stay the same for two answers to agree (see the module's docstring)."""
    result = answer.result or {}
    if answer.status != "ok":
        return ("error", answer.error.code if answer.error else answer.status)
    if answer.task == "faq":
        return tuple(sub.get("entry") if sub.get("matched") else None for sub in result.get("answers") or [])
    if answer.task == "qa":
        return (result.get("start"), result.get("end"))
    if answer.task == "classify":
        return result.get("label")
    if answer.task == "chat":
        return tuple(e.get("entry") if e.get("matched", True) else None for e in result.get("entries") or [])
    return None  # embed: compared by cosine in agree()


def agree(recorded: Answer, candidate: Answer) -> bool:
    if recorded.task == "embed" and recorded.status == candidate.status == "ok":
        a = (recorded.result or {}).get("embedding") or []
        b = (candidate.result or {}).get("embedding") or []
        norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
        return len(a) == len(b) and norm > 0 and sum(x * y for x, y in zip(a, b, strict=True)) / norm >= 0.999
    return signature(recorded) == signature(candidate)


def compare(requests: Mapping[str, Request | None], recorded: Mapping[str, Answer],
            candidate: Mapping[str, Answer], examples: int = 5,
            costs: tuple[Mapping[str, float], Mapping[str, float]] = ({}, {})) -> Comparison:  # fmt: skip
    """Compare over the requests both sides answered; count those either side lacks.

    ``costs``: each side's CPU + model ms per request id (from the answers' cost headers), where known.
    """
    old, new = Side(), Side()
    agreed = both = 0
    changed: list[dict[str, Any]] = []
    for rid, request in requests.items():
        a, b = recorded.get(rid), candidate.get(rid)
        if a is None or b is None:
            continue
        both += 1
        old.add(request, a, costs[0].get(rid))
        new.add(request, b, costs[1].get(rid))
        if agree(a, b):
            agreed += 1
        elif len(changed) < examples:
            changed.append({"id": rid, "recorded": _short(a), "candidate": _short(b)})
    return Comparison(
        requests=len(requests),
        both=both,
        agreed=agreed,
        recorded=old.metrics(),
        candidate=new.metrics(),
        missing_recorded=sum(1 for rid in requests if rid not in recorded),
        missing_candidate=sum(1 for rid in requests if rid not in candidate),
        changed=changed,
    )


@dataclass(frozen=True)
class Margins:
    """How much worse the candidate may be before the gate closes.

    ``share``: absolute, for matched, errors and grounded (0.02: two points);
    ``latency`` and ``cost``: relative (0.5: p99 up to 1.5x the recorded); None: not gated.
    ``min_agreement``: the least share of unchanged answers (None: not gated).
    """

    share: float = 0.02
    latency: float | None = None
    cost: float | None = None
    min_agreement: float | None = None
    max_missing: float = 0.01  # share of requests the candidate may leave unanswered


def gate(comparison: Comparison, margins: Margins) -> list[str]:
    """Why the candidate is worse than the margins allow (empty: it may roll out)."""
    reasons: list[str] = []
    old, new = comparison.recorded, comparison.candidate
    if comparison.requests and comparison.missing_candidate / comparison.requests > margins.max_missing:
        reasons.append(f"candidate left {comparison.missing_candidate} of {comparison.requests} requests unanswered")
    for name in SHARES:
        a, b = old.get(name), new.get(name)
        if a is None or b is None:
            continue
        worse = (a - b) if name in HIGHER_IS_BETTER else (b - a)
        if worse > margins.share + 1e-12:
            reasons.append(f"{name}: {_pct(a)} -> {_pct(b)}, worse by {worse * 100:.1f} points (margin "
                           f"{margins.share * 100:.1f})")  # fmt: skip
    for name, margin in (("latency_p99_ms", margins.latency), ("cost_ms_per_answer", margins.cost)):
        a, b = old.get(name), new.get(name)
        if margin is None or a is None or b is None:
            continue
        if b > a * (1 + margin) + 1e-9:
            reasons.append(f"{name}: {a:.1f} -> {b:.1f}, more than {1 + margin:.2f}x")
    agreement = comparison.agreement
    if margins.min_agreement is not None and agreement is not None and agreement < margins.min_agreement:
        reasons.append(f"agreement {_pct(agreement)} below {_pct(margins.min_agreement)}")
    return reasons


def table(comparison: Comparison) -> str:
    """The comparison as a plain-text table, one metric a row."""
    rows: list[tuple[str, str, str, str]] = [("metric", "recorded", "candidate", "change")]
    rows.append(("requests answered by both", str(comparison.both), str(comparison.both),
                 f"of {comparison.requests}"))  # fmt: skip
    rows.append(("same entry / span / label", "", _pct(comparison.agreement), f"{comparison.agreed} agree"))
    for name in ("matched", "errors", "grounded", "latency_p50_ms", "latency_p99_ms", "cost_ms_per_answer"):
        a, b = comparison.recorded.get(name), comparison.candidate.get(name)
        if a is None and b is None:
            continue
        share = name in SHARES
        show = _pct if share else _ms
        delta = "" if a is None or b is None else (f"{(b - a) * 100:+.1f} pt" if share else f"{b - a:+.1f} ms")
        rows.append((name, show(a), show(b), delta))
    rows.append(("unanswered", str(comparison.missing_recorded), str(comparison.missing_candidate), ""))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def _share(n: int, of: int) -> float | None:
    return round(n / of, 4) if of else None


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f} %"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _short(answer: Answer) -> Any:
    return {"status": answer.status, "says": signature(answer)}


def requests_by_id(requests: Sequence[Request]) -> dict[str, Request | None]:
    return {r.id: r for r in requests}
