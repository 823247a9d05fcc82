"""The infer core: bad parts become error outputs, never a failed batch or a crash."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest

from pipeline.errors import ConfigError
from pipeline.messages import Part, Request
from pipeline.models.tokenizer import Tokenizer
from pipeline.settings import Settings
from pipeline.stages.infer import Infer, build_infer
from pipeline.tasks import get_task


def qa_parts(tokenizers: dict[str, Tokenizer], settings: Settings, rid: str, context: str) -> list[Part]:
    request = Request(rid, "qa", question="where?", context=context)
    return get_task("qa").split(request, tokenizers["qa"], settings)


def test_providers_name_each_served_task(infer: Infer) -> None:
    # chat is served when its reply model is installed (retrieval runs here, the reply in generate)
    assert set(infer.providers) - {"chat"} == {"qa", "classify", "embed", "faq"}
    assert all(p.endswith("ExecutionProvider") for p in infer.providers.values())
    # embed, faq and chat run on one session of the sentence encoder
    assert infer.served["embed"].model is infer.served["faq"].model
    if "chat" in infer.served:
        assert infer.served["chat"].model is infer.served["faq"].model


def test_a_bad_part_fails_alone(infer: Infer, tokenizers: dict[str, Tokenizer], model_settings: Settings) -> None:
    good = qa_parts(tokenizers, model_settings, "good", "The parcel left Rotterdam on Monday.")
    alone = infer(good)
    bad = msgspec.structs.replace(good[0], id="bad", input_ids=[101, 10**9, 102], token_type_ids=[0, 0, 0])
    mixed = infer([good[0], bad, *good[1:]])
    assert mixed[1].id == "bad" and mixed[1].output["error"]["code"] == "model_error"
    for before, after in zip(alone, [mixed[0], *mixed[2:]], strict=True):
        assert before.output["start"] == after.output["start"]
        assert before.output["score"] == pytest.approx(after.output["score"], abs=1e-5)


def test_parts_that_cannot_run_get_error_outputs(infer: Infer) -> None:
    parts = [
        Part("r1", "translate", 0, 1, [101, 102]),
        Part("r2", "embed", 0, 1, []),
        Part("r3", "embed", 0, 1, [101] * 600),
        Part("r4", "embed", 0, 1, [101, 102], token_type_ids=[0]),
        Part("r5", "embed", 0, 1, [101, 7592, 102]),
    ]
    codes = [r.output.get("error", {}).get("code") for r in infer(parts)]
    assert codes == ["invalid_request", "invalid_request", "too_large", "invalid_request", None]


def test_postprocess_survives_a_bad_row(
    infer: Infer, tokenizers: dict[str, Tokenizer], model_settings: Settings
) -> None:
    parts = qa_parts(tokenizers, model_settings, "r", "The parcel left Rotterdam on Monday.")
    broken = msgspec.structs.replace(parts[0], id="broken", meta={"offsets": "nonsense"})
    served = infer.served["qa"]
    n = max(len(p.input_ids) for p in parts)
    outputs = {"start_logits": np.zeros((2, n), np.float32), "end_logits": np.zeros((2, n), np.float32)}
    rows = served.task.postprocess([parts[0], broken], outputs, served.runtime)
    assert "answer" in rows[0] and rows[1]["error"]["code"] == "model_error"

    faq = infer.served["faq"]
    part = Part("f", "faq", 0, 1, [101, 102], meta={"question": "?"})
    nan = {"embedding": np.full((1, 384), np.nan, np.float32)}
    assert faq.task.postprocess([part], nan, faq.runtime)[0]["error"]["code"] == "model_error"


def test_the_kb_is_embedded_once_with_every_question(infer: Infer) -> None:
    kb = infer.served["faq"].runtime.kb
    assert kb is not None
    assert kb.matrix.shape == (len(kb.questions), 384)
    assert np.allclose(np.linalg.norm(kb.matrix, axis=1), 1.0)
    # a KB question asked verbatim finds its own entry with cosine 1
    row = kb.questions.index("How do I reset my password?")
    best, score = kb.nearest(kb.matrix[row : row + 1])
    assert kb.entry_ids[int(best[0])] == "reset-password" and score[0] == pytest.approx(1.0)


def test_build_infer_refuses_a_task_without_model(model_settings: Settings) -> None:
    with pytest.raises(ConfigError, match="PIPELINE_QA_MODEL"):
        build_infer(model_settings.replace(qa_model=""), tasks=["qa"])


def test_parts_that_cannot_make_their_deadline_are_shed_with_a_deadline_exceeded_result(infer: Infer) -> None:
    from pipeline.messages import Headers, Part, Result, now_ms
    from pipeline.records import Record
    from pipeline.stages.infer import InferRecords

    adapter = InferRecords(infer)
    part = Part("r1", "embed", 0, 1, [101, 7592, 102])
    late = Headers(deadline_ms=int(now_ms() - 5)).to_list()
    fine = Headers(deadline_ms=int(now_ms() + 60_000)).to_list()
    outputs = adapter(
        [
            Record("parts", 0, 0, b"r1#0", part.encode(), late),
            Record("parts", 0, 1, b"r2#0", Part("r2", "embed", 0, 1, [101, 102]).encode(), fine),
        ]
    )
    shed, ran = (Result.decode(o.value) for o in outputs)
    assert shed.id == "r1" and shed.output["error"]["code"] == "deadline_exceeded"
    assert ran.id == "r2" and "error" not in ran.output
    adapter.batch_ms = 10_000.0  # batches now take 10 s: a part with 5 s left cannot make it
    soon = Headers(deadline_ms=int(now_ms() + 5_000)).to_list()
    [again] = adapter([Record("parts", 0, 2, b"r3#0", Part("r3", "embed", 0, 1, [101, 102]).encode(), soon)])
    assert Result.decode(again.value).output["error"]["code"] == "deadline_exceeded"
