"""Each task's split: windows, chunks and sub-questions, with the meta later steps need."""

from __future__ import annotations

import random

import pytest

from pipeline.catalog import CATALOG
from pipeline.errors import InvalidRequestError, TooLargeError
from pipeline.messages import Request
from pipeline.models.tokenizer import Tokenizer
from pipeline.settings import Settings
from pipeline.tasks import get_task

WORDS = ["parcel", "courier", "Rotterdam", "warehouse", "Monday", "customs", "batteries", "paperwork", "shipped"]


def text_of(words: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    return "  ".join(rng.choice(WORDS) for _ in range(words)) + "."


def test_get_task_knows_the_five_tasks_and_rejects_others() -> None:
    assert set(CATALOG) == {"qa", "classify", "embed", "faq", "chat"}
    assert CATALOG["faq"].kind == "embed" and CATALOG["qa"].fields == ("question", "context")
    assert CATALOG["chat"].delivers == "prompts" and CATALOG["chat"].generator == "chat_model"
    assert all(get_task(name).name == name for name in CATALOG)
    with pytest.raises(InvalidRequestError, match="unknown task 'translate'; known: qa, classify, embed, faq, chat"):
        get_task("translate")


def test_qa_windows_cover_the_context_and_map_back_to_it(
    tokenizers: dict[str, Tokenizer], model_settings: Settings
) -> None:
    context = "Our warehouse (Rotterdam) shipped it on Monday; ETA: 3.5 days. " + text_of(200, 1)
    request = Request("r1", "qa", question="When does it arrive?", context=context)
    tokenizer = tokenizers["qa"]
    parts = get_task("qa").split(request, tokenizer, model_settings)

    assert len(parts) > 5
    assert [p.part for p in parts] == list(range(len(parts))) and {p.of for p in parts} == {len(parts)}
    covered: set[int] = set()
    previous: list[list[int]] = []
    for part in parts:
        assert len(part.input_ids) <= model_settings.split.qa_max_length
        assert part.token_type_ids is not None and len(part.token_type_ids) == len(part.input_ids)
        offsets = part.meta["offsets"]
        assert len(offsets) == len(part.input_ids)
        base, window_text = part.meta["context_start"], part.meta["context_text"]
        spans = [o for o in offsets if o is not None]
        for token_id, span in zip(part.input_ids, offsets, strict=True):
            if span is None:
                continue
            piece = str(tokenizer.convert_ids_to_tokens(token_id)).removeprefix("##")
            assert context[span[0] : span[1]].lower() == piece  # offsets index the original context
            assert window_text[span[0] - base : span[1] - base] == context[span[0] : span[1]]
            covered.update(range(span[0], span[1]))
        if previous:  # neighbours overlap by the stride
            assert spans[: model_settings.split.qa_stride] == previous[-model_settings.split.qa_stride :]
        previous = spans
    assert covered == {i for i, ch in enumerate(context) if not ch.isspace()}


def test_qa_question_too_long_for_a_window_is_too_large(
    tokenizers: dict[str, Tokenizer], model_settings: Settings
) -> None:
    request = Request("r2", "qa", question=text_of(60), context="short")
    with pytest.raises(TooLargeError, match="question is"):
        get_task("qa").split(request, tokenizers["qa"], model_settings)


def test_qa_needs_its_fields(tokenizers: dict[str, Tokenizer], model_settings: Settings) -> None:
    with pytest.raises(InvalidRequestError, match="needs field 'context'"):
        get_task("qa").split(Request("r3", "qa", question="who?"), tokenizers["qa"], model_settings)


@pytest.mark.parametrize("task", ["classify", "embed"])
def test_chunks_cover_the_text_in_order(task: str, tokenizers: dict[str, Tokenizer], model_settings: Settings) -> None:
    tokenizer = tokenizers[task]
    text = text_of(150, 2)
    parts = get_task(task).split(Request("r4", task, text=text), tokenizer, model_settings)
    assert len(parts) > 3 and {p.of for p in parts} == {len(parts)}
    inner: list[int] = []
    for part in parts:
        assert len(part.input_ids) <= model_settings.split.chunk_tokens
        assert part.input_ids[0] == tokenizer.cls_token_id and part.input_ids[-1] == tokenizer.sep_token_id
        assert part.meta["tokens"] == len(part.input_ids)
        inner.extend(part.input_ids[1:-1])
    assert inner == tokenizer(text, add_special_tokens=False)["input_ids"]


def test_short_and_empty_texts_are_one_chunk(tokenizers: dict[str, Tokenizer], model_settings: Settings) -> None:
    for text in ("hello", ""):
        parts = get_task("embed").split(Request("r5", "embed", text=text), tokenizers["embed"], model_settings)
        assert len(parts) == 1 and parts[0].of == 1


def test_chunk_length_is_capped_by_the_settings(tokenizers: dict[str, Tokenizer], model_settings: Settings) -> None:
    settings = model_settings.replace(chunk_tokens=2)
    with pytest.raises(InvalidRequestError, match="no room"):
        get_task("classify").split(Request("r6", "classify", text="hi"), tokenizers["classify"], settings)


def test_faq_makes_one_part_per_sub_question(tokenizers: dict[str, Tokenizer], model_settings: Settings) -> None:
    message = "How do I reset my password? And can I change my delivery address? 我怎么重置密码？可以改地址吗？"
    parts = get_task("faq").split(Request("r7", "faq", text=message), tokenizers["faq"], model_settings)
    assert [p.meta["question"] for p in parts] == [
        "How do I reset my password?",
        "Can I change my delivery address?",  # the lead-in "And" only joined it to the message
        "我怎么重置密码？",
        "可以改地址吗？",
    ]
    assert [p.part for p in parts] == [0, 1, 2, 3] and {p.of for p in parts} == {4}
    assert not any("context" in p.meta for p in parts)  # each names its own topic
    one = get_task("faq").split(Request("r8", "faq", text="hi"), tokenizers["faq"], model_settings)
    assert len(one) == 1 and one[0].meta["question"] == "hi"


def test_faq_scores_a_follow_up_without_a_topic_with_the_question_before(
    tokenizers: dict[str, Tokenizer], model_settings: Settings
) -> None:
    message = "How do I return an item? And how long does that take? Do you sell gift cards?"
    parts = get_task("faq").split(Request("r9", "faq", text=message), tokenizers["faq"], model_settings)
    assert [p.meta["question"] for p in parts] == [
        "How do I return an item?",
        "How long does that take?",
        "Do you sell gift cards?",
    ]
    assert parts[1].meta["context"] == "How do I return an item?"
    assert "context" not in parts[0].meta and "context" not in parts[2].meta
    # The follow-up's model input is the earlier question and then its own.
    joined = tokenizers["faq"]("How do I return an item? How long does that take?")["input_ids"]
    assert list(parts[1].input_ids) == list(joined)
