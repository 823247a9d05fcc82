"""The ONNX Runtime engine against transformers: the same greedy tokens, alone and batched."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.models.generation import OrtEngine, ensure_decoder
from tests.chat_engines import build_tiny_llama

PROMPTS = ["Hello there, how are you?", "Where is my order?", "A", "Can I return shoes that don't fit? " * 3]
NEW = 16


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("gen")
    model = build_tiny_llama(root / "tiny-llama", seed=3)
    return model, ensure_decoder(str(model), root / "cache")


@pytest.fixture(scope="module")
def engine(tiny: tuple[Path, Path]) -> Iterator[OrtEngine]:
    engine = OrtEngine(tiny[1], threads=1)
    yield engine
    engine.close()


def reference(model: Path, ids: list[int]) -> list[int]:
    import torch
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(str(model)).eval()
    with torch.inference_mode():
        out = hf.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                          max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False)  # fmt: skip
    return [int(t) for t in out[0, len(ids) :]]


def test_greedy_tokens_equal_transformers_alone_and_batched(tiny: tuple[Path, Path], engine: OrtEngine) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny[1]))
    engine.eos = set()  # compare whole runs: transformers' min_new_tokens ignores the end token too
    prompts = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]
    expected = [reference(tiny[0], ids) for ids in prompts]
    alone = [engine.submit(ids, NEW, lambda _: True).result(60).tokens for ids in prompts]
    assert alone == expected
    batched: dict[int, list[int]] = {}

    def run(i: int) -> None:
        batched[i] = engine.submit(prompts[i], NEW, lambda _: True).result(60).tokens

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert [batched[i] for i in range(len(prompts))] == expected


def test_the_export_is_cached_by_content(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    assert ensure_decoder(str(tiny[0]), tiny[1].parent) == tiny[1]


def test_the_int8_decoder_is_made_once_and_compared_with_fp32_side_by_side(tiny: tuple[Path, Path]) -> None:
    from transformers import AutoTokenizer

    from pipeline.models.quantize import INT8, compare, ensure_int8

    folder = tiny[1]
    made = ensure_int8(folder)
    assert made.name == INT8 and ensure_int8(folder).stat().st_mtime == made.stat().st_mtime, "made once"
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    result = compare(folder, tokenizer, PROMPTS[:2], tokens=8)
    assert 0.0 <= result.agree_prefix <= result.agree_all <= 1.0
    assert result.int8_mb < result.fp32_mb and result.fp32_tokens_per_s > 0 and result.int8_tokens_per_s > 0
    assert "int8 vs fp32 on 2 prompts" in result.render()
