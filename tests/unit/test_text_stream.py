"""Incremental detokenisation with SmolLM2's byte-level tokenizer: whole characters, the same text as one decode."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.models.generator import TextStream
from tests.chat_engines import smollm_tokenizer

TEXTS = (
    "Hello, world! Your refund takes 5–7 days.",
    "Café au lait, naïve façade, Zürich.",
    "退货需要多长时间？我们七天内处理。",
    "Thanks 🙏🏽 see you 👋 — bye!\n\n1. Open the app\n2. Tap “Reset”",
    "  leading spaces and\ttabs ,  spaced punctuation .",
)


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return smollm_tokenizer()


@pytest.mark.parametrize("text", TEXTS)
def test_deltas_are_whole_characters_and_join_to_the_decoded_text(tokenizer: Any, text: str) -> None:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    stream = TextStream(tokenizer)
    deltas = [stream.push(token) for token in ids]
    deltas.append(stream.finish())
    assert not any("\ufffd" in d for d in deltas)
    assert "".join(deltas) == stream.text == tokenizer.decode(ids, skip_special_tokens=True) == text


def test_a_character_split_over_tokens_waits_for_its_last_byte(tokenizer: Any) -> None:
    ids = tokenizer("🙏🏽", add_special_tokens=False)["input_ids"]
    alone = [tokenizer.decode([t]) for t in ids]
    assert any("\ufffd" in piece for piece in alone), "the emoji's bytes span tokens (else the test shows nothing)"
    stream = TextStream(tokenizer)
    deltas = [stream.push(t) for t in ids]
    assert "" in deltas and "".join(deltas) + stream.finish() == "🙏🏽"


def test_special_tokens_add_no_text(tokenizer: Any) -> None:
    stream = TextStream(tokenizer)
    ids = [tokenizer.convert_tokens_to_ids("<|im_start|>"), *tokenizer("Hi", add_special_tokens=False)["input_ids"]]
    assert "".join(stream.push(t) for t in ids) + stream.finish() == "Hi"
