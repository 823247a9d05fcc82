"""What the generate stage needs from a reply model: a continuous-batching engine and its tokenizer.

:class:`Generator` is the seam between the stage (prompts, sessions, Kafka
records) and the model (ONNX Runtime with a KV cache, in
:mod:`pipeline.models.generation`). An engine takes sequences at any time;
each joins the running batch at the engine's next step and leaves it when it
ends, so conversations that arrive while others are being written do not wait
for them. Per token the engine calls the sequence's ``on_token`` (from its own
thread); returning False stops that sequence (a deadline).

:class:`TextStream` turns a growing list of token ids into text deltas, so a
multi-byte character split over two tokens is sent whole.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol

OnToken = Callable[[int], bool]
"""Called with each new token id; False stops the sequence (it ends ``stopped``)."""
Process = Callable[[Sequence[int], Any], Any]
"""A sequence's logits processor: (its generated tokens, its row of logits) -> the row to pick the greedy token from."""


@dataclass(frozen=True)
class Generated:
    """One finished sequence."""

    tokens: list[int]  # the new tokens, without the prompt (nor the end-of-sequence token)
    # "eos" (the model ended it), "length" (max_new_tokens), "stopped" (on_token said so, or the
    # engine's deadline_ms passed, or it closed: a reply cut short);
    # generate also uses "retrieved" for a reply that is the retrieved text, no model run.
    stopped: str
    prompt_tokens: int


class Generator(Protocol):
    """A continuous-batching generation engine (greedy)."""

    def submit(
        self,
        prompt_ids: Sequence[int],
        max_new_tokens: int,
        on_token: OnToken,
        deadline_ms: int | None = None,
        process: Process | None = None,
    ) -> Future[Generated]:
        """Start a sequence; it joins the running batch at the next step. Thread-safe.

        Past ``deadline_ms`` (epoch ms) the sequence ends ``stopped``, even one
        still waiting for room in the batch, which never runs then. ``process``
        changes the sequence's logits before each greedy pick.
        """
        ...

    def close(self) -> None:
        """Stop the engine's thread; sequences still running end ``stopped``."""
        ...


class TextStream:
    """Decode a sequence's tokens as they come into the text to append each time.

    Incremental, in constant work per token: only a window of the last tokens
    is decoded (from ``prefix`` to the end), and the text its older part
    (``prefix``..``read``) decoded to is cut off the front; the window keeps one
    token of context, so a leading space or a character whose bytes span
    tokens comes out whole. Nothing is emitted while the window ends inside a
    multi-byte character (the decoder's ``\ufffd``). ``text`` is always exactly
    the deltas joined.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.tokens: list[int] = []
        self.text = ""
        self.prefix = 0  # window start: tokens before it are in ``text`` and need no context
        self.read = 0  # tokens before this are in ``text``

    def _decode(self, tokens: list[int]) -> str:
        extra: dict[str, bool] = {}
        if getattr(self.tokenizer, "clean_up_tokenization_spaces", False):
            # Clean-up joins " ." across the window's edge differently from the whole text's.
            extra["clean_up_tokenization_spaces"] = False
        text: str = self.tokenizer.decode(tokens, skip_special_tokens=True, **extra)
        return text

    def push(self, token: int) -> str:
        """The text ``token`` adds ("" while it ends inside a character)."""
        self.tokens.append(token)
        done = self._decode(self.tokens[self.prefix : self.read])
        window = self._decode(self.tokens[self.prefix :])
        if len(window) <= len(done) or window.endswith("\ufffd") or not window.startswith(done):
            return ""  # half a character (or nothing new yet): wait for the next token
        delta = window[len(done) :]
        self.prefix, self.read = self.read, len(self.tokens)
        self.text += delta
        return delta

    def finish(self) -> str:
        """Whatever was held back (returned as the last delta); ``text`` is then the whole reply."""
        done = self._decode(self.tokens[self.prefix : self.read])
        window = self._decode(self.tokens[self.prefix :])
        delta = window[len(done) :] if window.startswith(done) else ""
        self.prefix = self.read = len(self.tokens)
        self.text += delta
        return delta


def chat_ids(tokenizer: Any, message: str) -> list[int]:
    """The token ids of one user ``message`` in the model's chat template, ready for the reply."""
    text = tokenizer.apply_chat_template([{"role": "user", "content": message}], add_generation_prompt=True,
                                         tokenize=False)  # fmt: skip
    return [int(t) for t in tokenizer(text, add_special_tokens=False)["input_ids"]]


DEFAULT_ENGINE = "pipeline.models.chat_engine:load_engine"


def load_generator(settings: Any) -> tuple[Generator, Any]:
    """The engine and tokenizer for ``settings.chat.chat_model``, started.

    ``settings.chat.chat_engine`` ("module:function", taking Settings) names another
    loader; tests use it to run the stage on a tiny model built in the test.
    """
    import importlib

    from pipeline.errors import ConfigError

    target = settings.chat.chat_engine or DEFAULT_ENGINE
    module, _, function = target.partition(":")
    try:
        loader = getattr(importlib.import_module(module), function)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot load the generation engine {target!r} (PIPELINE_CHAT_ENGINE): {exc}") from exc
    loaded: tuple[Generator, Any] = loader(settings)
    return loaded
