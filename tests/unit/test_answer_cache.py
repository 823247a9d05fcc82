"""The answer cache: its key, its LRU bounds, and filter answering from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.messages import Answer, Request
from pipeline.records import Record
from pipeline.settings import Settings
from pipeline.stages.answer_cache import AnswerCache, AnswerLru, cache_key, fingerprint, reply_budget, versions
from pipeline.stages.filter.stage import filter_records


def test_the_key_ignores_case_and_spacing_but_not_task_budget_or_version() -> None:
    key = cache_key("chat", "Where is my order?", 128, "v1")
    assert cache_key("chat", "where  is my ORDER?", 128, "v1") == key
    assert cache_key("faq", "Where is my order?", 128, "v1") != key
    assert cache_key("chat", "Where is my order?", 64, "v1") != key
    assert cache_key("chat", "Where is my order?", 128, "v2") != key
    assert cache_key("chat", "Where is my parcel?", 128, "v1") != key


def test_versions_change_with_the_knowledge_base_and_the_model(tmp_path: Path) -> None:
    kb = tmp_path / "kb.json"
    kb.write_text("[]")
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.bin").write_bytes(b"\0" * 10)
    settings = Settings.of(faq_kb=kb, chat_model=str(model))
    before = versions(settings)
    kb.write_text('[{"id": "x"}]')
    after_kb = versions(settings)
    (model / "weights.bin").write_bytes(b"\1" * 11)
    after_model = versions(settings)
    rescored = versions(settings.replace(faq_min_score=settings.faq.faq_min_score + 0.01))
    assert len({before, after_kb, after_model, rescored}) == 4, "kb, model and faq scoring each change the version"
    assert fingerprint(tmp_path / "missing") == f"name:{tmp_path / 'missing'}"


def test_no_chat_model_is_not_the_working_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """chat off (PIPELINE_CHAT_MODEL=""): filter once hashed the whole working folder (minutes) before it started."""
    (tmp_path / "big.bin").write_bytes(b"\0" * 10)
    monkeypatch.chdir(tmp_path)
    assert fingerprint("") == "none"
    assert versions(Settings.of(chat_model="")).startswith("none/")


def test_reply_budget_is_bounded_by_the_setting() -> None:
    settings = Settings.of(chat_default_tokens=100, chat_max_tokens=200)
    assert reply_budget(settings.chat, None) == 100
    assert reply_budget(settings.chat, 150) == 150
    assert reply_budget(settings.chat, 10_000) == 200


def test_lru_is_bounded_by_bytes_evicting_the_least_recently_used() -> None:
    lru = AnswerLru(max_bytes=30, max_age_ms=1e9)
    lru.put(b"a", b"x" * 10, 0)
    lru.put(b"b", b"x" * 10, 0)
    lru.put(b"c", b"x" * 10, 0)
    assert lru.get(b"a", 1) is not None  # a is now the most recently used
    lru.put(b"d", b"x" * 10, 0)
    assert lru.get(b"b", 1) is None and lru.get(b"a", 1) is not None and lru.bytes == 30
    lru.put(b"huge", b"x" * 31, 0)  # larger than the whole cache: not kept
    assert lru.get(b"huge", 1) is None
    assert (lru.hits, lru.misses) == (2, 2)


def test_lru_forgets_answers_past_their_age_and_on_tombstones() -> None:
    lru = AnswerLru(max_bytes=1000, max_age_ms=100)
    lru.put(b"a", b"1", at_ms=1000)
    assert lru.get(b"a", 1050) == b"1"
    assert lru.get(b"a", 1101) is None and len(lru) == 0
    lru.put(b"b", b"2", at_ms=1000)
    lru.put(b"b", None, at_ms=1001)
    assert lru.get(b"b", 1002) is None and lru.bytes == 0


def _settings(tmp_path: Path) -> Settings:
    kb = tmp_path / "kb.json"
    kb.write_text("[]")
    return Settings.of(faq_kb=kb, chat_model=str(tmp_path))


def test_filter_answers_a_repeated_chat_request_from_the_cache(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    cache = AnswerCache(settings)
    request = Request("r2", "chat", text="Where is  my order?")
    key = cache_key("chat", "where is my order?", reply_budget(settings.chat, None), cache.version)
    earlier = Answer.success("r1", "chat", {"reply": "It is on its way."})
    cache.followed(key, earlier.encode(), 0.0 + 1e13)  # written "now" (far future for the age bound)
    record = Record("requests", 0, 0, b"r2", request.encode())
    [output] = filter_records([record], settings, cache)
    assert output.topic == "answers"
    answer = Answer.decode(output.value)
    assert answer.id == "r2" and answer.cached is True and answer.result == {"reply": "It is on its way."}
    # With a session, or another text, the request goes on to be generated.
    with_session = Request("r3", "chat", text="Where is my order?", session="s")
    [output] = filter_records([Record("requests", 0, 1, b"r3", with_session.encode())], settings, cache)
    assert output.topic == "filtered"
    other = Request("r4", "chat", text="Where is my parcel?")
    [output] = filter_records([Record("requests", 0, 2, b"r4", other.encode())], settings, cache)
    assert output.topic == "filtered"
    assert (cache.lru.hits, cache.lru.misses) == (1, 1)


def test_an_answer_cached_for_another_model_is_not_served(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    old = AnswerCache(settings)
    key = cache_key("chat", "hi", reply_budget(settings.chat, None), old.version)
    (tmp_path / "new-weights.bin").write_bytes(b"new")
    new = AnswerCache(settings.replace())
    new.followed(key, Answer.success("r1", "chat", {"reply": "old"}).encode(), 1e13)
    assert new.version != old.version
    assert new.answer(Request("r2", "chat", text="hi")) is None
