"""Each task's merge, on hand-made results: complete, partial and with failed parts."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from pipeline.messages import Part, Request, Result
from pipeline.models.batching import pad
from pipeline.models.tokenizer import Tokenizer
from pipeline.settings import Settings
from pipeline.stages.infer import Infer
from pipeline.tasks import Runtime, get_task
from pipeline.tasks.faq.task import FALLBACK, KbIndex, build_kb_index, reply_text
from tests.oracle import reference_faq
from tests.tiny_models import MINILM


def results(task: str, outputs: list[dict[str, Any]], of: int | None = None) -> list[Result]:
    return [Result("r", task, i, of or len(outputs), o) for i, o in enumerate(outputs)]


def test_qa_takes_the_best_window_and_tolerates_missing_ones() -> None:
    spans: list[dict[str, Any]] = [
        {"answer": "a", "start": 0, "end": 1, "score": 1.5},
        {"answer": "b", "start": 10, "end": 12, "score": 3.0},
        {"answer": "", "start": None, "end": None, "score": None},
    ]
    qa = get_task("qa")
    assert qa.merge(results("qa", spans), 3) == spans[1]
    assert qa.merge(results("qa", [spans[0]], of=3), 3)["answer"] == "a"  # partial
    assert qa.merge(results("qa", [spans[2]]), 1)["start"] is None


def test_classify_averages_logits_then_softmaxes() -> None:
    labels = ["no", "yes"]
    outs = [
        {"logits": [0.0, 2.0], "labels": labels, "tokens": 5},
        {"logits": [2.0, 0.0], "labels": labels, "tokens": 9},
    ]
    merged = get_task("classify").merge(results("classify", outs), 2)
    assert merged["probabilities"] == pytest.approx({"no": 0.5, "yes": 0.5})
    merged = get_task("classify").merge(results("classify", [*outs[:1], {"error": {"code": "model_error"}}]), 2)
    assert merged["label"] == "yes" and merged["score"] == pytest.approx(1 / (1 + math.exp(-2)))


def test_embed_weights_chunks_by_tokens_and_normalises() -> None:
    outs = [{"embedding": [1.0, 0.0], "tokens": 3}, {"embedding": [0.0, 1.0], "tokens": 1}]
    merged = get_task("embed").merge(results("embed", outs), 2)
    assert merged["embedding"] == pytest.approx(list(np.array([3.0, 1.0]) / math.sqrt(10)))
    assert merged["dim"] == 2 and merged["tokens"] == 4


def test_embed_chunks_travel_as_float32_bytes_and_merge_alike() -> None:
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((2, 384)).astype(np.float32)
    embed = get_task("embed")
    parts = [Part("r", "embed", i, 2, [101] * tokens) for i, tokens in enumerate((5, 3))]
    packed = embed.postprocess(parts, {"embedding": vectors}, Runtime(Settings()))
    assert packed[0] == {"embedding": vectors[0].tobytes(), "tokens": 5}
    # Through the results topic: base64 text in the JSON, a quarter of 384 JSON numbers.
    wire = [Result.decode(r.encode()) for r in results("embed", packed)]
    assert isinstance(wire[0].output["embedding"], str)
    as_numbers = results("embed", [{"embedding": vectors[0].tolist(), "tokens": 5}])[0]
    assert len(wire[0].encode()) * 3 < len(as_numbers.encode())
    as_lists = [{"embedding": v.tolist(), "tokens": t} for v, t in zip(vectors, (5, 3), strict=True)]
    assert embed.merge(wire, 2)["embedding"] == embed.merge(results("embed", as_lists), 2)["embedding"]
    one = embed.merge(wire[:1], 1)  # one chunk: its own vector, normalised
    assert one["embedding"] == pytest.approx(list(vectors[0] / np.linalg.norm(vectors[0].astype(np.float64))))
    assert one["tokens"] == 5 and one["dim"] == 384
    for bad in ("not base64!", "AAAA" * 3 + "AA==", 7):
        with pytest.raises(ValueError, match=r"base64|float32|embedding must be"):
            embed.merge(results("embed", [{"embedding": bad, "tokens": 1}]), 1)


def test_faq_keeps_the_order_asked_and_writes_one_reply() -> None:
    def out(q: str, entry: str, matched: bool) -> dict[str, Any]:
        return {"question": q, "entry": entry, "match": q, "answer": f"A-{entry}", "score": 0.9, "matched": matched}

    outs = [
        out("first?", "e1", True),
        out("second?", "e2", True),
        out("again first?", "e1", True),
        out("嗯？", "e3", False),
    ]
    merged = get_task("faq").merge(results("faq", outs), 4)
    assert [a["entry"] for a in merged["answers"]] == ["e1", "e2", "e1", "e3"]
    assert merged["reply"].split("\n\n")[:2] == ["A-e1", "A-e2"]  # a repeated answer is said once
    assert "嗯？" in merged["reply"] and "抱歉" in merged["reply"]
    assert reply_text([out("lost?", "x", False)]) == FALLBACK.format(question="lost?")


@dataclass(frozen=True)
class Entry:
    id: str
    questions: tuple[str, ...]
    answer: str


SMALL_KB = [
    Entry("opening-hours", ("When are you open?", "What are your opening hours?"), "9 to 5, Monday to Friday."),
    Entry("reset-password", ("How do I reset my password?", "I forgot my password"), "Use 'Forgot password'."),
    Entry("refund", ("When do I get my money back?", "How long does a refund take?"), "Within 5 days."),
]


def test_faq_with_a_kb_of_its_own_equals_direct_nearest_neighbour(
    infer: Infer, tokenizers: dict[str, Tokenizer], model_settings: Settings
) -> None:
    served = infer.served["faq"]
    kb: KbIndex = build_kb_index(SMALL_KB, served.model, tokenizers["faq"], model_settings)
    runtime = Runtime(settings=model_settings, kb=kb)
    message = "I can't remember my password. Are you open on Monday? how long until my refund arrives"
    task = get_task("faq")
    parts = task.split(Request("m", "faq", text=message), tokenizers["faq"], model_settings)
    outputs = served.model.run(pad(parts, served.model.meta.pad_token_id, served.model.input_names))
    rows = task.postprocess(parts, outputs, runtime)
    merged = task.merge([Result("m", "faq", p.part, p.of, o) for p, o in zip(parts, rows, strict=True)], len(parts))
    entries = [a["entry"] for a in merged["answers"]]
    assert entries == reference_faq(MINILM, SMALL_KB, message, model_settings)
    assert entries == ["reset-password", "opening-hours", "refund"]
    assert all(a["matched"] for a in merged["answers"])
