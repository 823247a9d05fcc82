"""The ONNX Runtime engine on a tiny random Llama: transformers' tokens, continuous batching, the ways a reply ends."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pipeline.models.chat_engine import ensure_decoder, stream_replies
from pipeline.models.export import ExportedModel, ensure_exported
from pipeline.models.generation import OrtEngine
from pipeline.settings import Settings
from tests.chat_engines import build_tiny_llama

PROMPTS = ["Hello there, how are you?", "Where is my order?", "A", "Can I return shoes that don't fit? " * 3]
NEW = 16


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ExportedModel]:
    root = tmp_path_factory.mktemp("gen")
    model = build_tiny_llama(root / "tiny-llama", seed=3, initializer_range=0.2)  # varied tokens
    return model, ensure_exported(str(model), "decoder", Settings.of(model_cache_dir=root / "cache"))


@pytest.fixture(scope="module")
def tokenizer(tiny: tuple[Path, ExportedModel]) -> object:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny[1].path))


@pytest.fixture(scope="module")
def prompts(tokenizer: object) -> list[list[int]]:
    return [list(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in PROMPTS]  # type: ignore[operator]


@pytest.fixture
def engine(tiny: tuple[Path, ExportedModel]) -> Iterator[OrtEngine]:
    engine = OrtEngine(tiny[1], threads=1)
    engine.eos = set()  # whole runs: a random model may pick its end token anywhere
    yield engine
    engine.close()


def alone(engine: OrtEngine, ids: list[int], new: int = NEW) -> list[int]:
    return engine.submit(ids, new, lambda _: True).result(60).tokens


def reference(model: Path, ids: list[int], new: int = NEW) -> list[int]:
    import torch
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(str(model)).eval()
    with torch.inference_mode():
        out = hf.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                          max_new_tokens=new, min_new_tokens=new, do_sample=False)  # fmt: skip
    return [int(t) for t in out[0, len(ids) :]]


def test_the_export_is_verified_and_cached(tiny: tuple[Path, ExportedModel]) -> None:
    model, exported = tiny
    meta = exported.meta
    assert meta.task == "decoder" and meta.decoder is not None and meta.max_diff <= 1e-3
    assert meta.decoder.layers == 2 and meta.input_names[:3] == ("input_ids", "attention_mask", "position_ids")
    assert len(meta.input_names) == 3 + 2 * meta.decoder.layers == len(meta.output_names) + 2
    assert ensure_decoder(str(model), exported.path.parent) == exported.path


def test_greedy_tokens_equal_transformers_alone_and_batched(
    tiny: tuple[Path, ExportedModel], engine: OrtEngine, prompts: list[list[int]]
) -> None:
    expected = [reference(tiny[0], ids) for ids in prompts]
    assert [alone(engine, ids) for ids in prompts] == expected
    futures = [engine.submit(ids, NEW, lambda _: True) for ids in prompts]  # one continuous batch
    assert [f.result(60).tokens for f in futures] == expected


def test_a_sequence_joins_a_running_batch_at_the_next_step(engine: OrtEngine, prompts: list[list[int]]) -> None:
    want_long, want_short = alone(engine, prompts[3], 40), alone(engine, prompts[1], 8)
    events: list[str] = []
    started = threading.Event()

    def long_token(_: int) -> bool:
        events.append("long")
        if len(events) >= 5:
            started.set()
        return True

    steps = engine.steps
    first = engine.submit(prompts[3], 40, long_token)
    assert started.wait(60)
    second = engine.submit(prompts[1], 8, lambda _: events.append("short") or True)
    assert second.result(60).tokens == want_short and first.result(60).tokens == want_long
    # The short one ran inside the long one's run: its tokens came between the long one's.
    assert events.index("short") > 0 and len(events) - 1 - events[::-1].index("long") > events.index("short")
    # They shared steps: fewer than if they had run one after the other (prefills give each its first token).
    assert engine.steps - steps < 39 + 7


def test_the_end_token_stops_a_sequence_without_being_part_of_it(engine: OrtEngine, prompts: list[list[int]]) -> None:
    # The first new token after the start of some reply (a random model repeats itself a lot).
    runs = [(ids, alone(engine, ids)) for ids in prompts]
    ids, full, cut = next((i, f, c) for i, f in runs for c in range(1, len(f)) if f[c] not in f[:c])
    engine.eos = {full[cut]}
    done = engine.submit(ids, NEW, lambda _: True).result(60)
    assert done.stopped == "eos" and done.tokens == full[:cut] and done.prompt_tokens == len(ids)
    first = engine.submit(ids, NEW, lambda _: True)
    engine.eos = {full[0]}  # the end token straight from prefill: an empty reply
    assert engine.submit(ids, NEW, lambda _: True).result(60) == type(done)([], "eos", len(ids))
    first.result(60)


def test_max_tokens_ends_a_sequence_with_length(engine: OrtEngine, prompts: list[list[int]]) -> None:
    seen: list[int] = []
    done = engine.submit(prompts[2], 5, lambda t: seen.append(t) or True).result(60)
    assert done.stopped == "length" and len(done.tokens) == 5 and done.tokens == seen


def test_a_deadline_stops_a_sequence_early(engine: OrtEngine, prompts: list[list[int]]) -> None:
    now = int(time.time() * 1000)
    late = engine.submit(prompts[0], NEW, lambda _: True, deadline_ms=now - 1).result(60)
    assert late.stopped == "stopped" and late.tokens == []

    def slow(_: int) -> bool:
        time.sleep(0.03)
        return True

    cut = engine.submit(prompts[0], 200, slow, deadline_ms=int(time.time() * 1000) + 150).result(60)
    assert cut.stopped == "stopped" and 0 < len(cut.tokens) < 200
    assert cut.tokens == alone(engine, prompts[0], len(cut.tokens)), "the text so far is the real reply's start"


def test_the_token_budget_holds_a_sequence_back_until_there_is_room(
    tiny: tuple[Path, ExportedModel], prompts: list[list[int]]
) -> None:
    budget = len(prompts[0]) + 10  # room for one reply of 10 tokens at a time
    engine = OrtEngine(tiny[1], threads=1, max_tokens=budget)
    engine.eos = set()
    order: list[int] = []
    try:
        first = engine.submit(prompts[0], 10, lambda _: order.append(0) or True)
        second = engine.submit(prompts[2], 10, lambda _: order.append(1) or True)
        first.result(60), second.result(60)
    finally:
        engine.close()
    assert order == [0] * 10 + [1] * 10


def test_prompts_arriving_together_are_prefilled_a_few_at_a_time_between_steps(
    tiny: tuple[Path, ExportedModel], prompts: list[list[int]]
) -> None:
    room = max(len(p) for p in prompts[:3])  # one prompt per prefill
    engine = OrtEngine(tiny[1], threads=1, max_prefill_tokens=room)
    engine.eos = set()
    events: list[tuple[int, int]] = []
    counts = [0, 0, 0]

    def on_token(index: int) -> Callable[[int], bool]:
        def take(_: int) -> bool:
            counts[index] += 1
            events.append((index, counts[index]))
            return True

        return take

    try:
        with engine.lock:  # all three wait before the loop looks
            futures = [engine.submit(prompts[i], 6, on_token(i)) for i in range(3)]
        results = [f.result(60).tokens for f in futures]
        alone_tokens = [alone(engine, prompts[i], 6) for i in range(3)]
    finally:
        engine.close()
    assert events.index((0, 2)) < events.index((1, 1)) < events.index((2, 1)), "the first streams before others join"
    assert results == alone_tokens, "joining later changes no token"


def test_stream_replies_yields_each_replys_text_as_it_is_written(
    engine: OrtEngine, tokenizer: object, prompts: list[list[int]]
) -> None:
    texts = ["", ""]
    for index, delta in stream_replies(engine, tokenizer, prompts[:2], 8):
        texts[index] += delta
    for index in range(2):
        tokens = alone(engine, prompts[index], 8)
        assert texts[index] == tokenizer.decode(tokens, skip_special_tokens=True)  # type: ignore[attr-defined]


def test_a_failing_callback_fails_its_sequence_only(engine: OrtEngine, prompts: list[list[int]]) -> None:
    def boom(_: int) -> bool:
        raise RuntimeError("client went away")

    bad = engine.submit(prompts[0], NEW, boom)
    good = engine.submit(prompts[1], NEW, lambda _: True)
    with pytest.raises(RuntimeError, match="client went away"):
        bad.result(60)
    assert len(good.result(60).tokens) == NEW


def test_closing_stops_what_is_running(tiny: tuple[Path, ExportedModel], prompts: list[list[int]]) -> None:
    engine = OrtEngine(tiny[1], threads=1)
    engine.eos = set()
    running = engine.submit(prompts[0], 100_000, lambda _: True)
    time.sleep(0.2)
    engine.close()
    assert running.result(10).stopped == "stopped"
    with pytest.raises(RuntimeError):
        engine.submit(prompts[0], 1, lambda _: True)


def test_another_architecture_drops_in(tmp_path: Path) -> None:
    """PIPELINE_CHAT_MODEL takes any transformers causal-LM folder the decoder export can trace: a Qwen2 here
    (the family of the small multilingual instruct models), exported, verified and generated like SmolLM2."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from tests.chat_engines import smollm_tokenizer

    tokenizer = smollm_tokenizer()
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=2048, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True, initializer_range=0.2,
    )  # fmt: skip
    model = tmp_path / "tiny-qwen2"
    Qwen2ForCausalLM(config).eval().save_pretrained(str(model))
    tokenizer.save_pretrained(str(model))
    exported = ensure_exported(str(model), "decoder", Settings.of(model_cache_dir=tmp_path / "cache"))
    assert exported.meta.max_diff <= 1e-3
    ids = list(tokenizer("Where is my order?", add_special_tokens=False)["input_ids"])
    engine = OrtEngine(exported, threads=1)
    engine.eos = set()
    try:
        assert alone(engine, ids) == reference(model, ids)
    finally:
        engine.close()
