"""The correctness oracle in one process: split → infer (ONNX, mixed batches) → merge
equals the PyTorch model run on the whole input (``tests/oracle.py``).

All requests of a test go through one Infer call, shuffled, so batches mix
parts of several requests, tasks and lengths, and results must come back in
the order the parts went in.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.messages import Part, Request, Result
from pipeline.models.tokenizer import Tokenizer
from pipeline.settings import Settings
from pipeline.stages.infer import Infer
from pipeline.tasks import get_task
from tests.oracle import reference_classify, reference_embed, reference_faq, reference_qa
from tests.tiny_models import MINILM

SENTENCE = (
    "the order shipped from our warehouse in Rotterdam on Monday and the courier said it would arrive "
    "within three working days unless customs needed more paperwork for the batteries inside the parcel"
)
WORDS = SENTENCE.split(" ")


def long_text(words: int, seed: int) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(words)) + "."


def answer_all(
    requests: Sequence[Request], infer: Infer, tokenizers: dict[str, Tokenizer], settings: Settings
) -> dict[str, dict[str, Any]]:
    """Split every request, run all parts in one shuffled Infer call, merge per request."""
    parts: list[Part] = []
    for request in requests:
        parts.extend(get_task(request.task).split(request, tokenizers[request.task], settings))
    random.Random(7).shuffle(parts)
    results = infer(parts)
    assert [(r.id, r.part) for r in results] == [(p.id, p.part) for p in parts]  # order restored
    by_request: dict[str, list[Result]] = {}
    for result in results:
        assert "error" not in result.output, result.output
        by_request.setdefault(result.id, []).append(result)
    answers = {}
    for rid, got in by_request.items():
        got.sort(key=lambda r: r.part)
        assert [r.part for r in got] == list(range(got[0].of))
        answers[rid] = get_task(got[0].task).merge(got, got[0].of)
    return answers


def test_every_task_equals_the_in_process_pytorch_model(
    infer: Infer, tokenizers: dict[str, Tokenizer], model_settings: Settings, tiny_models: dict[str, Path]
) -> None:
    settings = model_settings
    qa = [(f"qa{i}", "When will the parcel arrive?", long_text(n, i)) for i, n in enumerate((40, 250, 700))]
    classify = [(f"cl{i}", long_text(n, 10 + i)) for i, n in enumerate((5, 120, 600))]
    embed = [(f"em{i}", text) for i, text in enumerate(("How do I reset my password?", long_text(90, 20)))]
    faq = [("faq0", "How do I reset my password? And can I change my delivery address? Where is my parcel")]
    requests = (
        [Request(rid, "qa", question=q, context=c) for rid, q, c in qa]
        + [Request(rid, "classify", text=t) for rid, t in classify]
        + [Request(rid, "embed", text=t) for rid, t in embed]
        + [Request(rid, "faq", text=t) for rid, t in faq]
    )
    answers = answer_all(requests, infer, tokenizers, settings)

    worst_qa = 0.0
    for rid, question, context in qa:
        expected = reference_qa(tiny_models["qa"], question, context, settings)
        got = answers[rid]
        assert (got["start"], got["end"], got["answer"]) == (expected["start"], expected["end"], expected["answer"])
        assert got["answer"] == context[got["start"] : got["end"]]
        worst_qa = max(worst_qa, abs(got["score"] - expected["score"]))
    assert worst_qa < 1e-4

    worst_p = 0.0
    for rid, text in classify:
        expected = reference_classify(tiny_models["classify"], text, settings)
        got = answers[rid]
        assert got["label"] == expected["label"]
        assert got["probabilities"].keys() == expected["probabilities"].keys()
        worst_p = max(worst_p, *(abs(got["probabilities"][k] - p) for k, p in expected["probabilities"].items()))
    assert worst_p < 1e-4

    worst_cos = 0.0
    for rid, text in embed:
        vector = np.asarray(answers[rid]["embedding"])
        reference = reference_embed(MINILM, text, settings)
        assert answers[rid]["dim"] == 384 and np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-9)
        worst_cos = max(worst_cos, 1 - float(vector @ reference))
    assert worst_cos < 1e-5

    entries = [a["entry"] for a in answers["faq0"]["answers"]]
    assert entries == reference_faq(MINILM, settings.faq.faq_kb, faq[0][1], settings)
    assert entries[:2] == ["reset-password", "change-delivery-address"] and len(entries) == 3
    print(f"\noracle: qa score diff {worst_qa:.2e}, classify prob diff {worst_p:.2e}, embed 1-cos {worst_cos:.2e}")


def test_the_oracle_embedding_is_sentence_transformers(model_settings: Settings) -> None:
    """The embed reference itself agrees with sentence-transformers on a one-chunk text."""
    sentence_transformers = pytest.importorskip("sentence_transformers")
    text = "Where can I change my delivery address?"
    model = sentence_transformers.SentenceTransformer(str(MINILM), device="cpu")
    expected = model.encode([text], normalize_embeddings=True, convert_to_numpy=True)[0]
    assert 1 - float(reference_embed(MINILM, text, model_settings) @ expected) < 1e-6
