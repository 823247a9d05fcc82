"""The default chat engine as the pipeline uses it: loaded from Settings, and its replies as an iterator.

``load_engine`` is the default ``PIPELINE_CHAT_ENGINE`` (the ONNX Runtime
:class:`~pipeline.models.generation.OrtEngine`, its decoder exported on first
use); ``ensure_decoder`` makes or finds the decoder's export alone (``pipeline
up`` before its members start); ``stream_replies`` gives ``(index, text delta)``
for callers that want an iterator instead of callbacks::

    engine, tokenizer = load_engine(settings)
    for index, delta in stream_replies(engine, tokenizer, prompts, max_new_tokens):
        ...                                               # (which prompt, text it adds), as generated
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from pipeline.models.export import ensure_exported
from pipeline.models.generation import OrtEngine
from pipeline.models.generator import Generated, OnToken, TextStream
from pipeline.settings import Settings


def stream_replies(
    engine: OrtEngine, tokenizer: Any, prompts: Sequence[Sequence[int]], max_new_tokens: int
) -> Iterator[tuple[int, str]]:
    """Submit every prompt at once; yield ``(index, text delta)`` as the batch writes them, each reply's last.

    For callers that want a plain iterator (benchmarks, a console) instead of
    callbacks on the engine's thread.
    """
    events: queue.SimpleQueue[tuple[int, int | None]] = queue.SimpleQueue()
    streams = [TextStream(tokenizer) for _ in prompts]

    def on_token(index: int) -> OnToken:
        def put(token: int) -> bool:
            events.put((index, token))
            return True

        return put

    def on_done(index: int) -> Callable[[Future[Generated]], None]:
        return lambda _future: events.put((index, None))

    futures = []
    for index, prompt in enumerate(prompts):
        future = engine.submit(prompt, max_new_tokens, on_token(index))
        future.add_done_callback(on_done(index))
        futures.append(future)
    open_ = len(prompts)
    while open_:
        index, token = events.get()
        if token is None:
            open_ -= 1
            futures[index].result()  # a failed sequence raises here
            rest = streams[index].finish()
            if rest:
                yield index, rest
            continue
        delta = streams[index].push(token)
        if delta:
            yield index, delta


def load_engine(settings: Settings) -> tuple[OrtEngine, Any]:
    """The engine for ``settings.chat.chat_model`` (its decoder exported on first use) and its tokenizer."""
    from transformers import AutoTokenizer

    from pipeline.models.quantize import variant_file
    from pipeline.models.session import engine_providers

    exported = ensure_exported(settings.chat.chat_model, "decoder", settings)
    model_file = variant_file(exported, "int4" if settings.chat.chat_quantized else "fp32")
    engine = OrtEngine(
        exported,
        model_file=model_file.name,
        threads=settings.chat.generate_threads,
        max_sequences=settings.chat.generate_max_sequences,
        max_tokens=settings.chat.generate_max_tokens,
        max_prefill_tokens=settings.chat.generate_prefill_tokens,
        providers=engine_providers(settings),
    )
    return engine, AutoTokenizer.from_pretrained(str(exported.path))


def ensure_decoder(model: str, cache_dir: Path) -> Path:
    """The folder of ``model``'s decoder export (made now unless cached): ``model.onnx`` and ``meta.json``."""
    return ensure_exported(model, "decoder", Settings.of(model_cache_dir=Path(cache_dir))).path
