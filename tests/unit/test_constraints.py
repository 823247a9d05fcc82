"""Grounded decoding: each rule on a row of logits, and the engine's tokens with it equal transformers' ``generate``."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.models.constraints import DecodingRules, GroundedDecoding, Vocabulary
from pipeline.models.export import ExportedModel, ensure_exported
from pipeline.models.generation import OrtEngine
from pipeline.settings import Settings
from tests.chat_engines import build_tiny_llama

FACTS = "You can return unused items within 30 days of delivery. Refunds take 3-5 business days."
NUMBERS = {"30", "3-5", "3", "5"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ExportedModel]:
    root = tmp_path_factory.mktemp("grounded")
    model = build_tiny_llama(root / "tiny-llama", seed=5, initializer_range=0.2)
    return model, ensure_exported(str(model), "decoder", Settings.of(model_cache_dir=root / "cache"))


@pytest.fixture(scope="module")
def tokenizer(tiny: tuple[Path, ExportedModel]) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny[1].path))


@pytest.fixture(scope="module")
def vocab(tokenizer: Any) -> Vocabulary:
    return Vocabulary(tokenizer)


def ids(tokenizer: Any, text: str) -> list[int]:
    return [int(t) for t in tokenizer(text, add_special_tokens=False)["input_ids"]]


def processor(tokenizer: Any, vocab: Vocabulary, prefix: str = "", **rules: Any) -> GroundedDecoding:
    runs = [ids(tokenizer, " " + FACTS)]
    return GroundedDecoding(vocab, runs, NUMBERS, ids(tokenizer, prefix) if prefix else [], DecodingRules(**rules))


def flat(vocab: Vocabulary, favourite: int) -> np.ndarray:
    scores = np.zeros(vocab.size, np.float32)
    scores[favourite] = 10.0
    return scores


def digit(tokenizer: Any, d: str) -> int:
    return ids(tokenizer, d)[0]


# -- each rule alone ------------------------------------------------------------------------------


def test_a_number_the_facts_do_not_state_cannot_be_started(tokenizer: Any, vocab: Vocabulary) -> None:
    process = processor(tokenizer, vocab, "Returns are accepted within", copy_bonus=(0, 0, 0))
    scores = process([], flat(vocab, digit(tokenizer, "1")))  # the model wants "1" (say, "14 days")
    assert scores[digit(tokenizer, "1")] == -np.inf
    assert int(scores.argmax()) != digit(tokenizer, "1")
    assert np.isfinite(scores[digit(tokenizer, "3")]), "30 and 3-5 start with 3"


def test_half_a_number_must_be_finished_as_the_facts_write_it(tokenizer: Any, vocab: Vocabulary) -> None:
    process = processor(tokenizer, vocab, copy_bonus=(0, 0, 0))
    reply = ids(tokenizer, "within 3")
    # "3" is a fact's number by itself, so the reply may end it there, or go on to "30" or "3-5".
    scores = process(reply, flat(vocab, digit(tokenizer, "9")))
    assert scores[digit(tokenizer, "9")] == -np.inf and np.isfinite(scores[digit(tokenizer, "0")])
    # "3-" is half of "3-5": only "5" may follow.
    scores = process([*reply, ids(tokenizer, "-")[0]], flat(vocab, ids(tokenizer, " days")[0]))
    assert int(scores.argmax()) == digit(tokenizer, "5") and np.isfinite(scores).sum() == 1


def test_no_ngram_is_written_twice(tokenizer: Any, vocab: Vocabulary) -> None:
    process = processor(tokenizer, vocab, copy_bonus=(0, 0, 0), no_repeat=3)
    reply = ids(tokenizer, " I am sorry. I am")
    again = ids(tokenizer, " sorry")[0]
    assert process(reply, flat(vocab, again))[again] == -np.inf
    off = processor(tokenizer, vocab, copy_bonus=(0, 0, 0), no_repeat=0)
    assert int(off(reply, flat(vocab, again)).argmax()) == again, "the old decoder repeats"


def test_tokens_that_continue_the_facts_get_the_copy_bonus(tokenizer: Any, vocab: Vocabulary) -> None:
    process = processor(tokenizer, vocab, copy_bonus=(1.0, 2.0, 3.0), own_sentence=False)
    reply = ids(tokenizer, " You can return unused")
    nxt = ids(tokenizer, " You can return unused items")[len(reply)]
    scores = process(reply, np.zeros(vocab.size, np.float32))
    assert scores[nxt] == pytest.approx(3.0) and int(scores.argmax()) == nxt


def test_the_reply_cannot_end_before_a_sentence_of_its_own(tokenizer: Any, vocab: Vocabulary) -> None:
    process = processor(tokenizer, vocab, "You can return unused items within 30 days of delivery.")
    end = vocab.end_ids[0]
    assert process([], flat(vocab, end))[end] == -np.inf
    written = ids(tokenizer, " Refunds take a while.")
    assert int(process(written, flat(vocab, end)).argmax()) == end


# -- the engine with the processors equals transformers with them ---------------------------------


class AsTransformers:
    """The same processor objects as a transformers ``LogitsProcessor`` (rows right after a shared prompt length)."""

    def __init__(self, processes: Sequence[GroundedDecoding], prompt_length: int) -> None:
        self.processes, self.prompt_length = processes, prompt_length

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        out = scores.clone()
        for row, process in enumerate(self.processes):
            tokens = [int(t) for t in input_ids[row, self.prompt_length :]]
            out[row] = torch.from_numpy(process(tokens, scores[row].detach().numpy().copy()))
        return out


def reference(model: Path, prompt: list[int], process: GroundedDecoding, new: int) -> list[int]:
    import torch
    from transformers import AutoModelForCausalLM, LogitsProcessorList

    hf = AutoModelForCausalLM.from_pretrained(str(model)).eval()
    with torch.inference_mode():
        out = hf.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                          max_new_tokens=new, do_sample=False, eos_token_id=None, pad_token_id=0,
                          logits_processor=LogitsProcessorList([AsTransformers([process], len(prompt))]))  # fmt: skip
    return [int(t) for t in out[0, len(prompt) :]]


@pytest.fixture
def engine(tiny: tuple[Path, ExportedModel]) -> Iterator[OrtEngine]:
    engine = OrtEngine(tiny[1], threads=1)
    engine.eos = set()  # whole runs, as transformers without an end token
    yield engine
    engine.close()


CASES = [("Can I return it?", "You can return unused items within"), ("How long do refunds take?", "Refunds take"),
         ("Hello", "")]  # fmt: skip
NEW = 14


def test_greedy_tokens_with_the_processors_equal_transformers_alone_and_in_a_running_batch(
    tiny: tuple[Path, ExportedModel], tokenizer: Any, vocab: Vocabulary, engine: OrtEngine
) -> None:
    prompts = [ids(tokenizer, f"Facts: {FACTS}\nQuestion: {q}\nAnswer: {lead}") for q, lead in CASES]

    def make(lead: str) -> GroundedDecoding:
        return processor(tokenizer, vocab, lead, copy_bonus=(2.0, 4.0, 6.0), no_repeat=3)

    expected = [reference(tiny[0], p, make(lead), NEW) for p, (_, lead) in zip(prompts, CASES, strict=True)]
    plain = [engine.submit(p, NEW, lambda _: True).result(60).tokens for p in prompts]
    assert plain != expected, "the processors change what this model writes"
    alone = [engine.submit(p, NEW, lambda _: True, None, make(lead)).result(60).tokens
             for p, (_, lead) in zip(prompts, CASES, strict=True)]  # fmt: skip
    assert alone == expected
    # In one continuous batch, one row without a processor among them: each row keeps its own.
    futures = [
        engine.submit(p, NEW, lambda _: True, None, make(lead)) for p, (_, lead) in zip(prompts, CASES, strict=True)
    ]
    bare = engine.submit(prompts[0], NEW, lambda _: True)
    assert [f.result(60).tokens for f in futures] == expected
    assert bare.result(60).tokens == plain[0]
