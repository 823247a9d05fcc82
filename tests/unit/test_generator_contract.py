"""What the generate stage relies on from any engine behind :class:`~pipeline.models.generator.Generator`.

Parametrised over the engines there are: the scripted one here, and the ONNX
Runtime engine of ``pipeline.models.generation`` on a tiny model when that
module exists. A new engine passes these before generate uses it.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from pipeline.models.generator import Generated
from tests.chat_engines import CharTokenizer, ScriptedEngine

ENGINES = ["scripted"]
if importlib.util.find_spec("pipeline.models.generation") is not None:
    ENGINES.append("onnx")


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any]]:
    if request.param == "scripted":
        built: tuple[Any, Any] = (ScriptedEngine(), CharTokenizer())
    else:  # pragma: no cover - needs the llm branch
        from pipeline.models.generator import load_generator
        from pipeline.settings import Settings
        from tests.chat_engines import build_tiny_llama

        model = build_tiny_llama(tmp_path_factory.mktemp("contract") / "tiny-llama")
        built = load_generator(Settings.of(chat_model=str(model), model_cache_dir=tmp_path_factory.mktemp("cache")))
    yield built
    built[0].close()


def prompt(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def test_tokens_come_one_by_one_and_the_result_has_them_all(engine: tuple[Any, Any]) -> None:
    generator, tokenizer = engine
    seen: list[int] = []
    ids = prompt(tokenizer, "<user>Hello there\n<assistant>")
    done: Generated = generator.submit(ids, 8, lambda t: seen.append(t) or True).result(60)
    assert done.tokens == seen and 0 < len(seen) <= 8
    assert done.stopped in ("eos", "length") and done.prompt_tokens == len(ids)
    if done.stopped == "length":
        assert len(done.tokens) == 8


def test_returning_false_stops_the_sequence(engine: tuple[Any, Any]) -> None:
    generator, tokenizer = engine
    seen: list[int] = []
    done = generator.submit(prompt(tokenizer, "<user>Hello there\n<assistant>"), 50,
                            lambda t: seen.append(t) or len(seen) < 3).result(60)  # fmt: skip
    assert done.stopped == "stopped" and len(done.tokens) == 3


def test_greedy_replies_do_not_depend_on_what_else_is_running(engine: tuple[Any, Any]) -> None:
    """A sequence alone and the same sequence inside a batch of others: the same tokens."""
    generator, tokenizer = engine
    texts = [f"<user>Message number {i}, please answer\n<assistant>" for i in range(4)]
    alone = [generator.submit(prompt(tokenizer, t), 12, lambda _: True).result(60).tokens for t in texts]
    results: dict[int, list[int]] = {}

    def run(i: int) -> None:
        results[i] = generator.submit(prompt(tokenizer, texts[i]), 12, lambda _: True).result(60).tokens

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert [results[i] for i in range(4)] == alone
