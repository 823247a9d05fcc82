"""pipeline replay's judgement without Kafka: agreement by task, the metrics, the gate both ways, fresh deadlines."""

from __future__ import annotations

import pytest

from pipeline.errors import ConfigError
from pipeline.messages import DEADLINE_HEADER, HOP_PREFIX, Answer, ErrorInfo, Request
from pipeline.settings import Settings
from pipeline.tools.bench.loadgen import RawRecord
from pipeline.tools.replay.compare import Comparison, Margins, compare, gate, table
from pipeline.tools.replay.run import Recorded, candidate_settings, fresh


def faq(rid: str, *entries: str | None, latency: float = 100.0) -> Answer:
    subs = [{"question": "q", "entry": e or "x", "matched": e is not None} for e in entries]
    result = {"answers": subs, "reply": "r"}
    return Answer(id=rid, status="ok", task="faq", result=result, latency_ms={"filter": 1.0, "merge": latency - 1})


def test_a_faq_answer_agrees_when_each_sub_question_gets_the_same_entry_and_a_fallback_counts_as_none() -> None:
    requests = {f"r{i}": Request(id=f"r{i}", task="faq", text="q") for i in range(4)}
    recorded = {"r0": faq("r0", "a"), "r1": faq("r1", "a", "b"), "r2": faq("r2", "c"), "r3": faq("r3", "a")}
    candidate = {"r0": faq("r0", "a"), "r1": faq("r1", "a", None), "r2": faq("r2", "d")}
    comparison = compare(requests, recorded, candidate)
    assert (comparison.both, comparison.agreed, comparison.missing_candidate) == (3, 1, 1)
    assert comparison.recorded["matched"] == 1.0 and comparison.candidate["matched"] == 0.75
    assert [c["id"] for c in comparison.changed] == ["r1", "r2"]
    assert comparison.changed[0]["candidate"]["says"] == ("a", None)


def test_qa_spans_classify_labels_errors_and_chat_grounding_are_compared() -> None:
    qa = [Answer(id="q", status="ok", task="qa", result={"answer": "x", "start": s, "end": 9}) for s in (3, 4)]
    cls = [Answer(id="c", status="ok", task="classify", result={"label": lab}) for lab in ("pos", "pos")]
    err = Answer(id="e", status="model_error", task="faq", error=ErrorInfo(code="model_error", message="m"))
    facts = [{"entry": "hours", "matched": True, "answer": "We are open 9 to 5."}]
    chat = [Answer(id="h", status="ok", task="chat", result={"reply": reply, "entries": facts})
            for reply in ("We are open 9 to 5.", "We are open 8 to 6 and refund 30 %.")]  # fmt: skip
    requests = {"q": None, "c": None, "e": None, "h": Request(id="h", task="chat", text="when are you open?")}
    comparison = compare(requests, {"q": qa[0], "c": cls[0], "e": faq("e", "a"), "h": chat[0]},
                         {"q": qa[1], "c": cls[1], "e": err, "h": chat[1]})  # fmt: skip
    assert comparison.agreed == 2, "same label and same chat entries agree; another span and an error do not"
    assert comparison.recorded["errors"] == 0 and comparison.candidate["errors"] == 0.25
    assert comparison.recorded["grounded"] == 1.0 and comparison.candidate["grounded"] == 0.0


def test_the_gate_closes_when_the_candidate_is_worse_than_the_margin_and_opens_within_it() -> None:
    requests = {f"r{i}": None for i in range(10)}
    recorded = {rid: faq(rid, "a", latency=100) for rid in requests}
    candidate = {rid: faq(rid, None if i < 3 else "a", latency=180) for i, rid in enumerate(requests)}
    costs = (dict.fromkeys(requests, 2.0), dict.fromkeys(requests, 2.5))
    comparison = compare(requests, recorded, candidate, costs=costs)
    assert comparison.candidate["matched"] == 0.7
    assert gate(comparison, Margins(share=0.05))[0].startswith("matched: 100.0 % -> 70.0 %, worse by 30.0 points")
    assert gate(comparison, Margins(share=0.3)) == [], "30 points worse is within a 30-point margin"
    assert gate(comparison, Margins(share=0.5, latency=0.5)) == ["latency_p99_ms: 100.0 -> 180.0, more than 1.50x"]
    assert gate(comparison, Margins(share=0.5, latency=1.0, cost=0.3)) == []
    assert gate(comparison, Margins(share=0.5, cost=0.2)) == ["cost_ms_per_answer: 2.0 -> 2.5, more than 1.20x"]
    assert gate(comparison, Margins(share=0.5, min_agreement=0.8)) == ["agreement 70.0 % below 80.0 %"]
    better = compare(requests, candidate, recorded, costs=costs[::-1])
    assert gate(better, Margins(share=0.0, latency=0.0, cost=0.0)) == [], "better is never worse"
    lost = compare(requests, recorded, dict(list(candidate.items())[:8]))
    assert gate(lost, Margins(share=1.0)) == ["candidate left 2 of 10 requests unanswered"]
    again = Comparison.from_json(comparison.to_json())
    assert gate(again, Margins(share=0.05)) == gate(comparison, Margins(share=0.05))
    text = table(comparison)
    assert "matched" in text and "-30.0 pt" in text and "cost_ms_per_answer" in text


def test_a_replayed_request_gets_the_same_budget_from_now_and_no_recorded_hop_times() -> None:
    headers = [(DEADLINE_HEADER, b"31000"), (HOP_PREFIX + "requested", b"1000"), ("traceparent", b"t")]
    record = RawRecord(0, 5, b"r1", Request(id="r1", task="faq", text="q").encode(), headers, 1000)
    value, out = fresh(Recorded(record, Request.decode(record.value), 30000.0), 5_000_000.0, 10_000)
    assert value == record.value and out == [("traceparent", b"t"), (DEADLINE_HEADER, b"5030000")]
    inline = Request(id="r2", task="faq", text="q", deadline_ms=3000)
    record = RawRecord(0, 6, b"r2", inline.encode(), [], 1000)
    value, out = fresh(Recorded(record, inline, 2000.0), 5_000_000.0, 10_000)
    assert Request.decode(value).deadline_ms == 5_002_000 and out == [(DEADLINE_HEADER, b"5002000")]


def test_the_candidate_runs_under_a_prefix_of_its_own_with_the_changed_settings() -> None:
    live = Settings.of(prefix="shop-", metrics_port=9100)
    candidate = candidate_settings(live, {"PIPELINE_FAQ_MIN_SCORE": "0.5", "faq_unsure_margin": "0.1"}, "abc")
    assert candidate.kafka.prefix == "shop-replay-abc-" and candidate.topic("answers") == "shop-replay-abc-answers"
    assert candidate.faq.faq_min_score == 0.5 and candidate.faq.faq_unsure_margin == 0.1
    assert candidate.liveness.metrics_port == 0
    with pytest.raises(ConfigError, match="prefix of its own"):
        candidate_settings(live, {"PIPELINE_PREFIX": ""}, "abc")
